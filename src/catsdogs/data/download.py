"""Kaggle download of the raw data (competition "dogs-vs-cats" and the PetImages-layout dataset).

Credentials: ``KAGGLE_USERNAME``/``KAGGLE_KEY`` or ``~/.kaggle/kaggle.json``
(``KAGGLE_CONFIG_DIR`` moves that folder). Every failure becomes a ``DownloadError``
whose message says what to do; the CLI prints it as one line and exits 2.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

COMPETITION = "dogs-vs-cats"
DATASET = "bhavikjikadara/dog-and-cat-classification-dataset"
SOURCES = ("competition", "dataset", "all")


class DownloadError(RuntimeError):
    pass


class KaggleClient(Protocol):
    def authenticate(self) -> None: ...
    def competition_download_files(self, competition: str, path: str | None = None, **kwargs: Any) -> Any: ...
    def dataset_download_files(self, dataset: str, path: str | None = None, **kwargs: Any) -> Any: ...


def credentials_available() -> bool:
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    return (config_dir / "kaggle.json").is_file()


def default_client() -> KaggleClient:
    # Importing `kaggle` itself authenticates (and exits) at import time: use the API class.
    from kaggle.api.kaggle_api_extended import KaggleApi

    return KaggleApi()


def _extract_all(dest: Path) -> None:
    """Unpack the archives Kaggle delivers (the competition zip nests train.zip)."""
    for _ in range(2):
        for archive in sorted(dest.glob("*.zip")):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(dest)
            archive.unlink()


def download(
    dest: Path, source: str = "competition", client_factory: Callable[[], KaggleClient] = default_client
) -> list[Path]:
    if source not in SOURCES:
        raise DownloadError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if not credentials_available():
        raise DownloadError(
            "Kaggle credentials not found: set KAGGLE_USERNAME and KAGGLE_KEY, or save kaggle.json "
            "(Kaggle > Settings > API > Create New Token) to ~/.kaggle/kaggle.json; "
            "or skip the download and run `catsdogs data prepare --source DIR` on images you already have"
        )
    dest = Path(dest).resolve()
    try:
        client = client_factory()
        client.authenticate()
        done = []
        if source in ("competition", "all"):
            target = dest / COMPETITION
            target.mkdir(parents=True, exist_ok=True)
            log.info("downloading competition %s to %s (join the competition on kaggle.com first)", COMPETITION, target)
            client.competition_download_files(COMPETITION, path=str(target), quiet=False)
            _extract_all(target)
            done.append(target)
        if source in ("dataset", "all"):
            target = dest / "dog-and-cat-classification-dataset"
            target.mkdir(parents=True, exist_ok=True)
            log.info("downloading dataset %s to %s", DATASET, target)
            client.dataset_download_files(DATASET, path=str(target), unzip=True, quiet=False)
            _extract_all(target)
            done.append(target)
        return done
    except DownloadError:
        raise
    except Exception as exc:  # the Kaggle client raises many unrelated types (HTTP, IO, auth)
        raise DownloadError(
            f"Kaggle download failed ({type(exc).__name__}: {exc}); check network access and credentials"
        ) from exc
