"""Kaggle download: one clear line and exit 2 without credentials; the real code path against a fake client."""

from __future__ import annotations

import zipfile

import pytest
from typer.testing import CliRunner

from catsdogs.cli import app
from catsdogs.data import download as dl


@pytest.fixture()
def no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))


@pytest.fixture()
def credentials(monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "secret")


class FakeKaggle:
    """Behaves like KaggleApi: writes the zip files Kaggle delivers."""

    def __init__(self, fail: Exception | None = None):
        self.fail = fail
        self.calls: list[tuple[str, str]] = []

    def authenticate(self) -> None:
        if self.fail:
            raise self.fail

    def competition_download_files(self, competition, path=None, **kwargs):
        self.calls.append(("competition", competition))
        inner = f"{path}/train.zip"
        with zipfile.ZipFile(inner, "w") as zf:
            zf.writestr("train/cat.0.jpg", b"jpeg bytes")
            zf.writestr("train/dog.0.jpg", b"jpeg bytes")
        with zipfile.ZipFile(f"{path}/{competition}.zip", "w") as zf:
            zf.write(inner, "train.zip")
        import os

        os.remove(inner)

    def dataset_download_files(self, dataset, path=None, unzip=False, **kwargs):
        self.calls.append(("dataset", dataset))
        with zipfile.ZipFile(f"{path}/archive.zip", "w") as zf:
            zf.writestr("PetImages/Cat/0.jpg", b"jpeg bytes")
            zf.writestr("PetImages/Dog/0.jpg", b"jpeg bytes")


def test_cli_without_credentials_prints_one_line_and_exits_2(no_credentials, tmp_path):
    result = CliRunner().invoke(app, ["data", "download", "--dest", str(tmp_path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "KAGGLE_USERNAME" in lines[0] and "kaggle.json" in lines[0]


def test_kaggle_json_counts_as_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    assert not dl.credentials_available()
    (tmp_path / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    assert dl.credentials_available()


def test_downloads_and_unpacks_both_sources(credentials, tmp_path):
    fake = FakeKaggle()
    paths = dl.download(tmp_path, "all", client_factory=lambda: fake)
    assert fake.calls == [("competition", dl.COMPETITION), ("dataset", dl.DATASET)]
    assert (tmp_path / "dogs-vs-cats" / "train" / "cat.0.jpg").exists()
    assert (tmp_path / "dog-and-cat-classification-dataset" / "PetImages" / "Dog" / "0.jpg").exists()
    assert not list(tmp_path.rglob("*.zip"))
    assert paths == [tmp_path / "dogs-vs-cats", tmp_path / "dog-and-cat-classification-dataset"]


def test_network_or_auth_failure_is_a_download_error(credentials, tmp_path):
    with pytest.raises(dl.DownloadError, match=r"ConnectionError.*check network"):
        dl.download(tmp_path, "competition", client_factory=lambda: FakeKaggle(fail=ConnectionError("no route")))


def test_unknown_source(credentials, tmp_path):
    with pytest.raises(dl.DownloadError, match="unknown source"):
        dl.download(tmp_path, "s3")
