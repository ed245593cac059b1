"""Batch scoring of a photo archive on Ray Data: ``catsdogs score SOURCE --output scores.parquet``.

The pipeline is ``from_items(files) -> map_batches(Scorer, actor pool) -> parquet parts``:

* The driver lists the photos (folders, lists of paths, .zip and .tar archives) and ships the bundle's model
  files once through the object store; every ``Scorer`` actor writes them to its own temporary folder and
  loads ONE ``Predictor`` (the class behind the API), so preprocessing, calibration and the pet score are the
  API's. Each actor reads its photos itself (workers must see the paths: on a cluster, a shared volume).
* A file that cannot be read or decoded becomes a row with ``error`` set; the job goes on.
* Rows stream back to the driver, which writes them in parts of ``checkpoint_rows`` into the output folder
  (a parquet dataset: pandas, pyarrow, DuckDB and Spark read the folder as one table). Each part is written
  to a hidden temporary file and renamed, so an interrupted job leaves only whole parts.
* A re-run reads the parts and skips every file whose (path, sha256) was already scored by the same model
  version: an interrupted job resumes; a changed file or a new model version is scored again.

Ray is imported inside the functions (the ``ray`` extra): importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import socket
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from catsdogs.core.transforms import IMAGE_SUFFIXES
from catsdogs.inference.bundle import read_bundle_meta, resolve_model_uri, serving_files
from catsdogs.inference.predictor import Prediction, Predictor

LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
COMPRESSED_TAR = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst")
MAX_FILE_BYTES = 64 * 1024 * 1024  # a "photo" larger than this is refused without reading it into memory
MEMBER_SEP = "!/"  # an archive member's path: /data/photos.zip!/cats/1.jpg
SKIPPED = "_skipped"  # the actors' marker of a file already scored; never written


class ScoreError(ValueError):
    """A source or output the job cannot use; the message says which and why."""


@dataclass(frozen=True)
class ScoreSummary:
    files: int
    scored: int
    skipped: int
    errors: int
    parts: int
    seconds: float
    model_version: str
    output: Path

    @property
    def images_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0


# --- what to score ------------------------------------------------------------------------------------------
def _item(path: str, archive: str = "", member: str = "", offset: int = -1, size: int = -1) -> dict[str, Any]:
    return {"path": path, "archive": archive, "member": member, "offset": offset, "size": size}


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _folder(folder: Path) -> list[dict[str, Any]]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [_item(os.path.join(root, f)) for f in sorted(files) if _is_image(f)]
    if not found:
        raise ScoreError(f"{folder}: no image files in this folder (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def _list(path: Path) -> list[dict[str, Any]]:
    """One path per line, relative to the list's folder; blank lines and # comments are ignored."""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    return [_item(os.path.abspath(path.parent / line)) for line in lines if line and not line.startswith("#")]


def _zip(path: Path) -> list[dict[str, Any]]:
    try:
        with zipfile.ZipFile(path) as z:
            names = [i.filename for i in z.infolist() if not i.is_dir() and _is_image(i.filename)]
    except (zipfile.BadZipFile, OSError) as exc:
        raise ScoreError(f"{path}: not a readable zip archive ({exc})") from exc
    return [_item(f"{path}{MEMBER_SEP}{n}", archive=str(path), member=n) for n in names]


def _tar(path: Path) -> list[dict[str, Any]]:
    try:
        with tarfile.open(path, "r:") as t:  # uncompressed: a member is a byte range, read by any worker
            members = [m for m in t.getmembers() if m.isfile() and _is_image(m.name)]
    except (tarfile.TarError, OSError) as exc:
        raise ScoreError(f"{path}: not a readable uncompressed tar archive ({exc})") from exc
    return [_item(f"{path}{MEMBER_SEP}{m.name}", str(path), m.name, m.offset_data, m.size) for m in members]


def collect(sources: list[Path]) -> list[dict[str, Any]]:
    """Every photo of ``sources``, once each, in order. Raises ``ScoreError`` for a source that gives none."""
    items: list[dict[str, Any]] = []
    for source in sources:
        path = Path(os.path.abspath(source.expanduser()))
        name = path.name.lower()
        if path.is_dir():
            found = _folder(path)
        elif not path.is_file():
            raise ScoreError(f"{source}: no such file or folder (give a folder, an image, a path list or a .zip/.tar)")
        elif name.endswith(COMPRESSED_TAR):
            raise ScoreError(f"{source}: a compressed tar cannot be read in parallel; decompress it first (gunzip -k)")
        elif _is_image(name):
            found = [_item(str(path))]
        elif name.endswith(".zip"):
            found = _zip(path)
        elif name.endswith(".tar"):
            found = _tar(path)
        elif path.suffix.lower() in LIST_SUFFIXES:
            found = _list(path)
        else:
            raise ScoreError(
                f"{source}: not a folder, an image, a list of paths ({', '.join(sorted(LIST_SUFFIXES))}) "
                "or an archive (.zip, .tar)"
            )
        if not found:
            raise ScoreError(f"{source}: no image files in it")
        items += found
    unique = {item["path"]: item for item in items}  # the same photo named twice is scored once
    return list(unique.values())


# --- the output folder --------------------------------------------------------------------------------------
def output_schema(class_names: tuple[str, ...]) -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("path", pa.string()),
            ("sha256", pa.string()),
            ("label", pa.string()),
            ("confidence", pa.float64()),
            *((f"p_{c}", pa.float64()) for c in class_names),
            ("is_cat_or_dog", pa.bool_()),
            ("pet_score", pa.float64()),
            ("looks_like", pa.string()),
            ("uncertain", pa.bool_()),
            ("error", pa.string()),
            ("error_message", pa.string()),
            ("model_version", pa.string()),
            ("scored_at", pa.timestamp("ms", tz="UTC")),
        ]
    )


def prepare_output(output: Path, schema: Any, model_version: str) -> frozenset[str]:
    """Create the output folder, drop a killed writer's temporary files, and return the keys
    (``path`` + newline + ``sha256``) already scored by ``model_version``."""
    import pyarrow.dataset as pads

    if output.exists() and not output.is_dir():
        raise ScoreError(f"--output {output} is a file; give a folder name (it becomes a parquet dataset)")
    try:
        output.mkdir(parents=True, exist_ok=True)
        for stale in output.glob(".part-*.tmp"):
            stale.unlink()
    except OSError as exc:  # a parent that is a file, a read-only or missing mount, no permission
        raise ScoreError(
            f"--output {output}: cannot create or write this folder ({exc.strerror or exc}); give a writable path"
        ) from exc
    if not any(output.glob("*.parquet")):
        return frozenset()
    try:
        existing = pads.dataset(output, format="parquet")
        if existing.schema.names != schema.names:
            raise ScoreError(
                f"--output {output} holds scores with other columns ({', '.join(existing.schema.names)}): "
                "a model with other classes; write to another folder"
            )
        done = existing.to_table(
            columns=["path", "sha256"],
            filter=(pads.field("model_version") == model_version) & pads.field("sha256").is_valid(),
        )
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ScoreError(f"--output {output} is not a catsdogs scores folder: {exc}") from exc
    return frozenset(f"{p}\n{s}" for p, s in zip(done["path"].to_pylist(), done["sha256"].to_pylist(), strict=True))


class PartWriter:
    """Buffers rows and writes them as ``part-<run>-<n>.parquet``; each part appears whole or not at all."""

    def __init__(self, output: Path, schema: Any, rows_per_part: int):
        self.output, self.schema, self.rows_per_part = output, schema, rows_per_part
        self.run = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        self.pending: list[Any] = []
        self.parts = 0

    def add(self, table: Any) -> None:
        if table.num_rows:
            self.pending.append(table)
        if sum(t.num_rows for t in self.pending) >= self.rows_per_part:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.pending:
            return
        table = pa.concat_tables(self.pending).cast(self.schema)
        name = f"part-{self.run}-{self.parts:05d}.parquet"
        tmp = self.output / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.output / name)  # atomic within one filesystem
        self.pending, self.parts = [], self.parts + 1


# --- the actors ---------------------------------------------------------------------------------------------
def _resolve(value: Any) -> Any:
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


class Scorer:
    """The class-based UDF of the actor pool: loads the bundle once, then scores batches of file items."""

    def __init__(self, bundle: Any, done: Any, backend: str, threads: int, schema: Any):
        self._dir = tempfile.TemporaryDirectory(prefix="catsdogs-score-")  # removed when the actor ends
        for name, data in _resolve(bundle).items():
            (Path(self._dir.name) / name).write_bytes(data)
        self.predictor = Predictor.load(self._dir.name, backend=backend, threads=threads)
        self.done: frozenset[str] = _resolve(done)
        self.schema = schema
        self._zips: dict[str, zipfile.ZipFile] = {}

    def read(self, item: dict[str, Any]) -> bytes:
        """The file's bytes. Raises OSError (and zipfile/KeyError for a bad member) for one that cannot be read."""
        if not item["archive"]:
            if os.stat(item["path"]).st_size > MAX_FILE_BYTES:
                raise OSError(f"larger than {MAX_FILE_BYTES // 2**20} MiB")
            return Path(item["path"]).read_bytes()
        if item["offset"] >= 0:  # a tar member: a byte range of the archive
            if item["size"] > MAX_FILE_BYTES:
                raise OSError(f"larger than {MAX_FILE_BYTES // 2**20} MiB")
            with open(item["archive"], "rb") as f:
                f.seek(item["offset"])
                return f.read(item["size"])
        archive = self._zips.get(item["archive"]) or self._zips.setdefault(
            item["archive"], zipfile.ZipFile(item["archive"])
        )
        if archive.getinfo(item["member"]).file_size > MAX_FILE_BYTES:
            raise OSError(f"larger than {MAX_FILE_BYTES // 2**20} MiB")
        return archive.read(item["member"])

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        now = datetime.now(UTC)
        version = self.predictor.version
        rows: list[dict[str, Any]] = []
        payloads: dict[int, bytes] = {}
        for item in batch.to_pylist():
            row: dict[str, Any] = {"path": item["path"], "model_version": version, "scored_at": now, SKIPPED: False}
            try:
                data = self.read(item)
            except FileNotFoundError:
                row |= {"error": "not_found", "error_message": "no such file"}
            except (OSError, KeyError, zipfile.BadZipFile) as exc:
                row |= {
                    "error": "unreadable",
                    "error_message": str(exc.strerror or exc) if isinstance(exc, OSError) else str(exc),
                }
            else:
                row["sha256"] = hashlib.sha256(data).hexdigest()
                if f"{item['path']}\n{row['sha256']}" in self.done:
                    row[SKIPPED] = True
                else:
                    payloads[len(rows)] = data
            rows.append(row)
        for i, result in zip(payloads, self.predictor.predict_bytes(list(payloads.values())), strict=True):
            rows[i] |= _result_columns(result, self.predictor.class_names)
        return pa.Table.from_pylist(rows, schema=self.schema.append(pa.field(SKIPPED, pa.bool_())))


def _result_columns(result: Any, class_names: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(result, Prediction):
        return {"error": result.reason, "error_message": result.message}
    return {
        "label": result.label,
        "confidence": result.confidence,
        **{f"p_{c}": result.probabilities[c] for c in class_names},
        "is_cat_or_dog": result.is_cat_or_dog,
        "pet_score": result.pet_score,
        "looks_like": result.looks_like,
        "uncertain": result.uncertain,
    }


# --- the job ------------------------------------------------------------------------------------------------
def check_address(address: str | None, timeout: float = 5.0) -> None:
    """Refuse an address Ray cannot use before ``ray.init``, which retries an unreachable one for minutes."""
    if not address or address in ("auto", "local"):
        return
    if address.startswith("ray://"):
        raise ScoreError(
            f"--address {address}: the Ray Client (ray://) is not supported; give the head's GCS address HOST:6379, "
            "or run on the cluster: ray job submit -- catsdogs score ... --address auto"
        )
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ScoreError(f"--address {address}: expected auto or HOST:PORT (the head's GCS port, 6379 by default)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ScoreError(
            f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); is `ray start --head` "
            "running? Leave --address out to score on a local Ray"
        ) from exc


@contextmanager
def ray_session(address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Local Ray (``num_cpus``; default all) or the cluster at ``address``; shut down on exit if started here.

    An existing connection (a test's, a notebook's) is used as it is and left open.
    """
    import logging

    import ray

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a batch job
    if address:
        # The workers import catsdogs from their own environment: the cluster's image has catsdogs[ray].
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    # After ray.init, which installs its own SIGTERM handler (it dies at once): a stopped job (kill,
    # `ray job stop`, Kubernetes) unwinds like Ctrl-C instead, so the rows scored so far are written.
    previous = (
        signal.signal(signal.SIGTERM, _raise_interrupt)
        if threading.current_thread() is threading.main_thread()
        else None
    )
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        ray.shutdown()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def bundle_payload(bundle_dir: Path, meta: dict[str, Any]) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in serving_files(bundle_dir, meta)}


def run_score(
    sources: list[Path],
    output: Path,
    *,
    model: str | Path,
    backend: str = "auto",
    address: str | None = None,
    num_cpus: int | None = None,
    actors: int | None = None,
    threads: int = 1,
    batch_size: int = 32,
    checkpoint_rows: int = 1000,
    on_progress: Callable[[int, int], None] | None = None,
) -> ScoreSummary:
    """Score every photo of ``sources`` into the parquet folder ``output``; ``on_progress(done, total)``."""
    import pyarrow.compute as pc

    items = collect(sources)
    check_address(address)
    bundle_dir = resolve_model_uri(model)
    meta = read_bundle_meta(bundle_dir)
    version = str(meta.get("version", "unknown"))
    schema = output_schema(tuple(meta["preprocess"]["class_names"]))
    done_keys = prepare_output(output, schema, version)
    writer = PartWriter(output, schema, checkpoint_rows)
    start = time.perf_counter()
    counts = {"scored": 0, "skipped": 0, "errors": 0}
    if on_progress:
        on_progress(0, len(items))  # the sources are valid: the job starts (Ray, then the actors' model loads)
    with ray_session(address, num_cpus):
        try:
            for batch in _dataset(items, bundle_dir, meta, done_keys, backend, threads, actors, batch_size, schema):
                new = batch.filter(pc.invert(batch[SKIPPED])).drop_columns([SKIPPED])
                counts["skipped"] += batch.num_rows - new.num_rows
                counts["scored"] += new.num_rows
                counts["errors"] += new.num_rows - new["error"].null_count
                writer.add(new)
                if on_progress:
                    on_progress(counts["scored"] + counts["skipped"], len(items))
        finally:
            writer.flush()  # also when interrupted: what was scored is kept
    seconds = time.perf_counter() - start
    return ScoreSummary(
        len(items), counts["scored"], counts["skipped"], counts["errors"], writer.parts, seconds, version, output
    )


def _dataset(
    items: list[dict[str, Any]],
    bundle_dir: Path,
    meta: dict[str, Any],
    done_keys: frozenset[str],
    backend: str,
    threads: int,
    actors: int | None,
    batch_size: int,
    schema: Any,
) -> Iterator[Any]:
    """The scored rows as pyarrow tables, as the actors finish them (every file once, skipped ones marked)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI draws one bar for the whole job
    pool = actors or max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
    # Blocks of about two batches, and at least one per actor so that none idles on a small job.
    blocks = min(len(items), max(pool, -(-len(items) // (batch_size * 2))))
    ds = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        Scorer,
        fn_constructor_kwargs={
            "bundle": ray.put(bundle_payload(bundle_dir, meta)),  # once in the object store, not per actor
            "done": ray.put(done_keys),
            "backend": backend,
            "threads": threads,
            "schema": schema,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=pool),
        num_cpus=threads,
    )
    yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")
