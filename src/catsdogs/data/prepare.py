"""Data preparation: raw images -> validated, de-duplicated, split manifest (then ``cache``, ``loaders``).

Raw data is never modified. The split of an image depends only on its content
hash, so it is deterministic, leaks no duplicate across splits, and does not move
when files are added to the source.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from catsdogs.core.config import Params
from catsdogs.core.paths import PROJECT_ROOT
from catsdogs.core.transforms import IMAGE_SUFFIXES, InvalidImageError, load_image

log = logging.getLogger(__name__)

CLASSES = ("cat", "dog")
SPLITS = ("train", "val", "test")
_FLAT_NAME = re.compile(r"^(cat|dog)[._-]", re.IGNORECASE)
MANIFEST_FIELDS = ("path", "label", "split", "sha256", "width", "height")


@dataclass(frozen=True)
class Record:
    path: str  # relative to the source directory
    label: str
    split: str
    sha256: str
    width: int
    height: int


def label_from_path(rel: Path) -> str | None:
    """Kaggle flat layout (``cat.12.jpg``) or class folders (``PetImages/Cat/12.jpg``)."""
    for part in reversed(rel.parts[:-1]):
        name = part.lower().rstrip("s")  # Cat, cats, DOGS
        if name in CLASSES:
            return name
    m = _FLAT_NAME.match(rel.name)
    return m.group(1).lower() if m else None


def discover(source: Path) -> Iterator[tuple[Path, str]]:
    """Yield (relative path, label) for every labelled file under ``source``, sorted."""
    for root, dirs, files in os.walk(source):
        dirs.sort()
        for name in sorted(files):
            rel = (Path(root) / name).relative_to(source)
            if name.startswith("."):
                continue
            label = label_from_path(rel)
            if label is not None:
                yield rel, label


def assign_split(sha256: str, val_fraction: float, test_fraction: float, seed: int) -> str:
    """Map a content hash to a split. Uniform per class, so stratified in expectation."""
    u = int(hashlib.sha256(f"{seed}:{sha256}".encode()).hexdigest()[:12], 16) / 16**12
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def _inspect(path: Path) -> tuple[str, int, int] | tuple[None, str, str]:
    """sha256 and size of a decodable image, or (None, reason, message)."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None, "not_an_image", f"unsupported extension {path.suffix!r}"
    data = path.read_bytes()
    try:
        img = load_image(data)
    except InvalidImageError as exc:
        return None, exc.reason, exc.message
    return hashlib.sha256(data).hexdigest(), img.width, img.height


@dataclass
class PrepareStats:
    source: str
    settings: dict[str, float | int | None]
    found: int
    kept: int
    skipped: dict[str, int]
    duplicates_removed: int
    conflicting_labels: int
    counts: dict[str, dict[str, int]]


def prepare(
    source: Path,
    out_dir: Path,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    limit: int | None = None,
    workers: int | None = None,
    progress: bool = False,
    base_dir: Path = PROJECT_ROOT,
) -> PrepareStats:
    """Scan ``source``, validate every file, de-duplicate, split, write manifest + stats.

    ``stats.json`` names the source relative to ``base_dir`` (the project), so the prepared folder
    is byte-identical on every machine with the same layout.
    """
    source = Path(source).resolve()
    if not source.is_dir():
        raise FileNotFoundError(f"data source {source} is not a directory")
    found = list(discover(source))
    if limit:
        found = _balanced_subset(found, limit)
    if not found:
        raise ValueError(f"no labelled images under {source} (expected cat.N.jpg/dog.N.jpg or Cat/ and Dog/ folders)")

    by_hash, skipped = _inspect_all(source, found, workers, progress)
    records, duplicates, conflicts = _deduplicate(by_hash, val_fraction, test_fraction, seed)
    if conflicts:
        skipped["conflicting_labels"] += conflicts

    counts = {s: {c: 0 for c in CLASSES} for s in SPLITS}
    for r in records:
        counts[r.split][r.label] += 1
    stats = PrepareStats(
        source=os.path.relpath(source, base_dir),
        settings={"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed, "limit": limit},
        found=len(found),
        kept=len(records),
        skipped=dict(sorted(skipped.items())),
        duplicates_removed=duplicates,
        conflicting_labels=conflicts,
        counts=counts,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(records, out_dir / "manifest.csv")
    (out_dir / "stats.json").write_text(json.dumps(asdict(stats), indent=2) + "\n")
    log.info("prepared %d images (%d duplicates removed, skipped %s)", len(records), duplicates, dict(skipped))
    return stats


def _inspect_all(
    source: Path, found: list[tuple[Path, str]], workers: int | None, progress: bool
) -> tuple[dict[str, list[tuple[str, str, int, int]]], Counter[str]]:
    """Decode every file once (in worker processes): the usable ones by content hash, the others counted by reason."""
    skipped: Counter[str] = Counter()
    by_hash: dict[str, list[tuple[str, str, int, int]]] = {}
    paths = [source / rel for rel, _ in found]
    with ProcessPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        results: Iterable = pool.map(_inspect, paths, chunksize=64)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(paths), desc="inspect", unit="img")
        for (rel, label), res in zip(found, results, strict=True):
            if res[0] is None:
                skipped[res[1]] += 1
                log.warning("skip %s: %s (%s)", rel, res[2], res[1])
                continue
            sha, w, h = res
            by_hash.setdefault(sha, []).append((rel.as_posix(), label, w, h))
    return by_hash, skipped


def _deduplicate(
    by_hash: dict[str, list[tuple[str, str, int, int]]], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[Record], int, int]:
    """One record per content hash, split by that hash; identical files with different labels are dropped.

    Returns the records sorted by path, the duplicates removed and the files dropped for conflicting labels.
    """
    records: list[Record] = []
    duplicates = conflicts = 0
    for sha, entries in by_hash.items():
        labels = {e[1] for e in entries}
        if len(labels) > 1:
            conflicts += len(entries)
            log.warning("skip %d identical files with conflicting labels: %s", len(entries), [e[0] for e in entries])
            continue
        duplicates += len(entries) - 1
        rel, label, w, h = min(entries)
        records.append(Record(rel, label, assign_split(sha, val_fraction, test_fraction, seed), sha, w, h))
    records.sort(key=lambda r: r.path)
    return records, duplicates, conflicts


def ensure_prepared(params: Params, fallback_dir: Path) -> Path:
    """The prepared-data folder matching ``params.data``; prepares one if none matches.

    The canonical folder (``data.prepared_dir``, a DVC output) is used when it matches;
    ad-hoc runs (``--data-dir``, ``--limit``) prepare into ``fallback_dir`` instead of
    overwriting it.
    """
    d = params.data
    source = params.path(d.source)
    wanted = {"val_fraction": d.val_fraction, "test_fraction": d.test_fraction, "seed": d.seed, "limit": d.limit}
    canonical = params.path(d.prepared_dir)
    for out_dir in (canonical, fallback_dir):
        stats_file = out_dir / "stats.json"
        if stats_file.exists() and (out_dir / "manifest.csv").exists():
            stats = json.loads(stats_file.read_text())
            if raw_source(out_dir, params.base_dir) == source and stats.get("settings") == wanted:
                return out_dir
    out_dir = canonical if not canonical.exists() else fallback_dir
    log.info("preparing data from %s into %s", source, out_dir)
    prepare(source, out_dir, progress=True, base_dir=params.base_dir, **wanted)
    return out_dir


def raw_source(prepared_dir: Path, base_dir: Path = PROJECT_ROOT) -> Path:
    """The raw image folder a prepared manifest's relative paths point into."""
    return (base_dir / json.loads((prepared_dir / "stats.json").read_text())["source"]).resolve()


def _balanced_subset(found: list[tuple[Path, str]], limit: int) -> list[tuple[Path, str]]:
    """A deterministic, class-balanced subset (for quick runs and tests)."""
    per_class = {c: [f for f in found if f[1] == c] for c in CLASSES}
    out = []
    for items in per_class.values():
        items = sorted(items, key=lambda f: hashlib.sha1(f[0].as_posix().encode()).hexdigest())
        out += items[: limit // len(CLASSES)]
    return sorted(out)


def write_manifest(records: Iterable[Record], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        for r in records:
            writer.writerow(asdict(r))


def read_manifest(path: Path) -> list[Record]:
    with Path(path).open(newline="") as f:
        return [
            Record(row["path"], row["label"], row["split"], row["sha256"], int(row["width"]), int(row["height"]))
            for row in csv.DictReader(f)
        ]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
