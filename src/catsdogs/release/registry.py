"""The registry holds bundles by content: what the gate promotes.

A version number is only meaningful in the registry that issued it, so a bundle is found by the
sha256 of its model files (tag ``bundle_sha256``), never by a number written on another machine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from catsdogs.inference.bundle import bundle_digest
from catsdogs.training.tracking import REGISTERED_MODEL, set_alias, setup_mlflow

BUNDLE_TAG = "bundle_sha256"
BUNDLE_ARTIFACT = "bundle"
# Versions registered by the gate are pyfunc models that take image bytes (catsdogs.inference.pyfunc); older
# ones, without this tag, hold the bare bundle and are not reused as champion.
FORMAT_TAG, PYFUNC_FORMAT = "model_format", "pyfunc-image-bytes"

log = logging.getLogger(__name__)


def find_bundle_version(digest: str, name: str = REGISTERED_MODEL) -> str | None:
    """The local version whose tag ``bundle_sha256`` is ``digest`` (the newest if several)."""
    import mlflow

    versions = mlflow.MlflowClient().search_model_versions(f"name = '{name}'")
    matching = [
        int(v.version) for v in versions if v.tags.get(BUNDLE_TAG) == digest and v.tags.get(FORMAT_TAG) == PYFUNC_FORMAT
    ]
    return str(max(matching)) if matching else None


def register_bundle(bundle: Path, meta: dict[str, Any], digest: str, name: str = REGISTERED_MODEL) -> str:
    """Register ``bundle`` as a new version: a pyfunc model that takes image bytes (``inference.pyfunc``),
    logged into an "import" run of this store, tagged with its digest."""
    import mlflow

    from catsdogs.inference.pyfunc import log_pyfunc

    tags = {BUNDLE_TAG: digest, "git_commit": str(meta.get("git_commit")), "data_hash": str(meta.get("data_hash"))}
    with mlflow.start_run(
        run_name=f"bundle {digest[:8]}", tags=tags | {"source_run": str(meta.get("mlflow_run_id"))}
    ) as run:
        info = log_pyfunc(bundle, meta)
    client = mlflow.MlflowClient()
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(
        name, info.model_uri, run_id=run.info.run_id, tags=tags | {FORMAT_TAG: PYFUNC_FORMAT}, model_id=info.model_id
    )
    return str(version.version)


def promote_bundle(bundle: Path, meta: dict[str, Any], alias: str, name: str = REGISTERED_MODEL) -> str | None:
    """Point ``alias`` at the local version holding exactly this bundle (registering it if needed)."""
    digest = bundle_digest(bundle, meta)  # recomputed from the files, not read from model.json
    try:
        setup_mlflow()
        version = find_bundle_version(digest, name) or register_bundle(bundle, meta, digest, name)
        set_alias(version, alias, name)
    except ImportError:
        log.warning("mlflow is not installed: alias %s not set", alias)
        return None
    log.info("alias %s -> %s version %s (bundle %s)", alias, name, version, digest[:12])
    return version
