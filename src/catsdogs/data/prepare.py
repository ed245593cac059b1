"""Data preparation: raw images -> validated, de-duplicated, split manifest -> decoded cache.

Raw data is never modified. The split of an image depends only on its content
hash, so it is deterministic, leaks no duplicate across splits, and does not move
when files are added to the source.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from catsdogs.core.config import Params
from catsdogs.core.paths import PROJECT_ROOT
from catsdogs.core.transforms import IMAGE_SUFFIXES, InvalidImageError, PreprocessConfig, load_image, resize

if TYPE_CHECKING:
    import torch

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


# --- decoded cache -------------------------------------------------------------------


def _decode_resized(args: tuple[str, int, str]) -> np.ndarray:
    path, size, interpolation = args
    cfg = PreprocessConfig(image_size=size, interpolation=interpolation)
    return resize(load_image(path, target_size=size), cfg)


def build_cache(
    records: list[Record], source: Path, cfg: PreprocessConfig, cache_dir: Path, *, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Decode every image once into a uint8 (N, S, S, 3) array + int64 labels, cached on disk.

    The cache key covers the manifest content and the resize parameters, so a changed
    split or input size never reads stale pixels.
    """
    key_src = json.dumps([[r.sha256 for r in records], cfg.image_size, cfg.interpolation])
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    cache_dir.mkdir(parents=True, exist_ok=True)
    x_path = cache_dir / f"pixels-{cfg.image_size}-{key}.npy"
    labels = np.asarray([CLASSES.index(r.label) for r in records], dtype=np.int64)
    if x_path.exists():
        return np.load(x_path, mmap_mode="r"), labels
    size = cfg.image_size
    # A temp name per process: two processes (e.g. torchrun ranks) may build the same cache at once.
    tmp = x_path.with_name(f"{x_path.stem}.{os.getpid()}.tmp.npy")
    pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(records), size, size, 3))
    jobs = [(str(source / r.path), size, cfg.interpolation) for r in records]
    with ProcessPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        it: Iterable = pool.map(_decode_resized, jobs, chunksize=64)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(jobs), desc=f"decode {size}px", unit="img")
        for i, arr in enumerate(it):
            pixels[i] = arr
    pixels.flush()
    del pixels
    os.replace(tmp, x_path)  # atomic; identical content, so the last writer winning is harmless
    return np.load(x_path, mmap_mode="r"), labels


# --- loaders -------------------------------------------------------------------------


@dataclass
class SplitData:
    pixels: np.ndarray  # uint8 (N, S, S, 3)
    labels: np.ndarray  # int64 (N,)


def load_splits(
    params: Params, prepared_dir: Path, cfg: PreprocessConfig, *, progress: bool = True
) -> dict[str, SplitData]:
    """Decoded uint8 arrays per split, through the shared ``resize`` step."""
    records = read_manifest(prepared_dir / "manifest.csv")
    source = raw_source(prepared_dir, params.base_dir)
    pixels, labels = build_cache(records, source, cfg, params.path(params.data.cache_dir), progress=progress)
    split_of = np.asarray([r.split for r in records])
    return {s: SplitData(np.ascontiguousarray(pixels[split_of == s]), labels[split_of == s]) for s in SPLITS}


def load_split(params: Params, prepared_dir: Path, cfg: PreprocessConfig, split: str) -> SplitData:
    """One split only (decodes and caches just its images: cheap for evaluation at a new size)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    records = [r for r in read_manifest(prepared_dir / "manifest.csv") if r.split == split]
    source = raw_source(prepared_dir, params.base_dir)
    pixels, labels = build_cache(records, source, cfg, params.path(params.data.cache_dir))
    return SplitData(pixels, labels)


class ArrayLoader:
    """Batches from an in-memory uint8 (N, H, W, 3) array: no decoding in the loop.

    Under torch.distributed each rank reads its own shard (``rank``/``world_size``). Training
    shards are re-shuffled every epoch from ``seed + epoch`` and cut to equal length, so every
    rank runs the same number of steps; evaluation shards (no shuffle) cover each image once.
    """

    def __init__(
        self,
        data: SplitData,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        n = len(self.data.labels)
        if not self.shuffle:
            return np.arange(self.rank, n, self.world_size)
        order = np.random.default_rng(self.seed + self.epoch).permutation(n)
        usable = n - n % self.world_size
        return order[self.rank : usable : self.world_size]

    def __len__(self) -> int:
        return math.ceil(len(self.indices()) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        import torch

        order = self.indices()
        for start in range(0, len(order), self.batch_size):
            idx = np.sort(order[start : start + self.batch_size])
            yield torch.from_numpy(self.data.pixels[idx]), torch.from_numpy(self.data.labels[idx])
