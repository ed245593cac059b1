"""Ingestion: both real layouts, bad files skipped with reasons, de-duplication, stable leak-free splits."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from catsdogs.core.transforms import PreprocessConfig
from catsdogs.data.cache import build_cache
from catsdogs.data.prepare import assign_split, discover, label_from_path, prepare, read_manifest


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture()
def flat_source(tmp_path, kaggle_train_dir) -> Path:
    """Kaggle layout: cat.N.jpg / dog.N.jpg, plus bad files and duplicates built from real images."""
    src = tmp_path / "flat"
    src.mkdir()
    for label in ("cat", "dog"):
        for n in range(30):
            shutil.copy(kaggle_train_dir / f"{label}.{n}.jpg", src / f"{label}.{n}.jpg")
    shutil.copy(src / "cat.0.jpg", src / "cat.9000.jpg")  # same-label duplicate
    shutil.copy(src / "cat.1.jpg", src / "dog.9001.jpg")  # identical bytes, conflicting label
    (src / "cat.9002.jpg").write_bytes(b"")  # empty
    data = (src / "dog.1.jpg").read_bytes()
    (src / "dog.9003.jpg").write_bytes(data[: len(data) // 3])  # truncated
    (src / "dog.9004.jpg").write_text("not really a jpeg")  # non-image with an image name
    (src / "cat.9005.txt").write_text("notes")  # unsupported extension
    (src / "README.md").write_text("unlabelled files are ignored")
    return src


@pytest.fixture()
def folder_source(tmp_path, kaggle_train_dir) -> Path:
    """PetImages layout: Cat/N.jpg, Dog/N.jpg (any case), with PNG and a corrupt file."""
    src = tmp_path / "PetImages"
    for label, folder in (("cat", "Cat"), ("dog", "DOGS")):
        (src / folder).mkdir(parents=True)
        for n in range(20):
            shutil.copy(kaggle_train_dir / f"{label}.{n + 100}.jpg", src / folder / f"{n}.jpg")
    buf = io.BytesIO()
    Image.open(kaggle_train_dir / "cat.200.jpg").save(buf, format="PNG")
    (src / "Cat" / "png_image.png").write_bytes(buf.getvalue())
    (src / "Dog" if (src / "Dog").exists() else src / "DOGS").joinpath("666.jpg").write_bytes(b"\x00" * 100)
    (src / "Thumbs.db").write_bytes(b"\x00\x01")
    return src


def test_label_from_path_understands_both_layouts():
    assert label_from_path(Path("cat.12.jpg")) == "cat"
    assert label_from_path(Path("Dog.7.JPG")) == "dog"
    assert label_from_path(Path("PetImages/Cat/12.jpg")) == "cat"
    assert label_from_path(Path("x/dogs/1.png")) == "dog"
    assert label_from_path(Path("PetImages/Bird/1.jpg")) is None
    assert label_from_path(Path("catalogue.jpg")) is None


def test_prepare_flat_layout_counts_skips_and_duplicates(tmp_path, flat_source):
    before = _tree_digest(flat_source)
    stats = prepare(flat_source, tmp_path / "out", workers=1)
    assert _tree_digest(flat_source) == before, "raw data must never be modified"
    assert stats.found == 66  # 60 images, 2 duplicates, 3 bad images and the .txt (README has no label)
    assert stats.skipped == {"conflicting_labels": 2, "corrupt": 1, "empty": 1, "not_an_image": 2}
    assert stats.duplicates_removed == 1
    assert stats.kept == 59  # 60 originals - cat.1 (conflicting); cat.9000 collapses into cat.0
    records = read_manifest(tmp_path / "out" / "manifest.csv")
    assert len(records) == stats.kept
    names = {r.path for r in records}
    assert "cat.1.jpg" not in names and "dog.9001.jpg" not in names
    assert ("cat.0.jpg" in names) != ("cat.9000.jpg" in names)
    assert all(r.width == 200 and r.height == 200 and len(r.sha256) == 64 for r in records)
    on_disk = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert on_disk["kept"] == 59 and sum(sum(c.values()) for c in on_disk["counts"].values()) == 59


def test_prepare_folder_layout(tmp_path, folder_source):
    stats = prepare(folder_source, tmp_path / "out", workers=1)
    records = read_manifest(tmp_path / "out" / "manifest.csv")
    labels = Counter(r.label for r in records)
    assert labels == {"cat": 21, "dog": 20}
    assert stats.skipped == {"not_an_image": 1}
    assert any(r.path == "Cat/png_image.png" for r in records)


def test_no_image_anywhere_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no labelled images"):
        prepare(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        prepare(tmp_path / "missing", tmp_path / "out")


def test_split_is_deterministic_and_stable_when_files_are_added(tmp_path, flat_source, kaggle_train_dir):
    prepare(flat_source, tmp_path / "a", workers=1)
    prepare(flat_source, tmp_path / "b", workers=1)
    a = (tmp_path / "a" / "manifest.csv").read_text()
    assert a == (tmp_path / "b" / "manifest.csv").read_text()
    for n in range(500, 540):
        shutil.copy(kaggle_train_dir / f"dog.{n}.jpg", flat_source / f"dog.{n}.jpg")
    prepare(flat_source, tmp_path / "c", workers=1)
    old = {r.path: r.split for r in read_manifest(tmp_path / "a" / "manifest.csv")}
    new = {r.path: r.split for r in read_manifest(tmp_path / "c" / "manifest.csv")}
    assert all(new[p] == s for p, s in old.items()), "adding files must not move existing ones"


def test_assign_split_fractions_and_seed():
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20000)]
    counts = Counter(assign_split(h, 0.1, 0.1, seed=42) for h in hashes)
    assert abs(counts["test"] / 20000 - 0.1) < 0.01 and abs(counts["val"] / 20000 - 0.1) < 0.01
    other = Counter(assign_split(h, 0.1, 0.1, seed=7) for h in hashes)
    assert [assign_split(h, 0.1, 0.1, 42) for h in hashes[:50]] != [assign_split(h, 0.1, 0.1, 7) for h in hashes[:50]]
    assert abs(other["train"] - counts["train"]) < 400


def test_balanced_limit_subset(tmp_path, kaggle_train_dir):
    src = tmp_path / "src"
    src.mkdir()
    for label, count in (("cat", 25), ("dog", 15)):
        for n in range(count):
            shutil.copy(kaggle_train_dir / f"{label}.{n}.jpg", src / f"{label}.{n}.jpg")
    prepare(src, tmp_path / "out", limit=20, workers=1)
    labels = Counter(r.label for r in read_manifest(tmp_path / "out" / "manifest.csv"))
    assert labels == {"cat": 10, "dog": 10}


def test_decoded_cache_is_reused_and_keyed_on_content(tmp_path, flat_source):
    prepare(flat_source, tmp_path / "out", workers=1)
    records = read_manifest(tmp_path / "out" / "manifest.csv")
    cfg = PreprocessConfig(image_size=32)
    x1, y1 = build_cache(records, flat_source, cfg, tmp_path / "cache")
    assert x1.shape == (len(records), 32, 32, 3) and x1.dtype.name == "uint8"
    assert list(y1) == [0 if r.label == "cat" else 1 for r in records]
    files = list((tmp_path / "cache").glob("*.npy"))
    x2, _ = build_cache(records, flat_source, cfg, tmp_path / "cache")
    assert list((tmp_path / "cache").glob("*.npy")) == files and (x1 == x2).all()
    build_cache(records[:-1], flat_source, cfg, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_discover_sorted_and_skips_hidden(tmp_path):
    for name in ("dog.2.jpg", "cat.1.jpg", ".cat.3.jpg"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p, _ in discover(tmp_path)] == ["cat.1.jpg", "dog.2.jpg"]


@pytest.mark.heavy
def test_real_kaggle_data_split_has_no_leak_and_is_stratified(tmp_path, kaggle_train_dir):
    """The full 23,000 images: duplicates collapse, no content in two splits, ~80/10/10 per class."""
    stats = prepare(kaggle_train_dir, tmp_path / "out")
    records = read_manifest(tmp_path / "out" / "manifest.csv")
    assert stats.found == 23000 and stats.duplicates_removed > 0 and stats.skipped == {}
    assert len({r.sha256 for r in records}) == len(records)
    for label in ("cat", "dog"):
        n = sum(r.label == label for r in records)
        for split, frac in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
            share = sum(r.label == label and r.split == split for r in records) / n
            assert abs(share - frac) < 0.015, (label, split, share)
