"""Shared fixtures: the real parts (pinned downloads in the cache), never stand-ins."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def cache() -> Path:
    from convert import sources

    return sources.cache_dir()


@pytest.fixture(scope="session")
def faces_root(cache: Path) -> Path:
    """The 5-celebrity photo set (train/ and val/, one folder per person)."""
    from convert import sources

    return sources.celebrity_faces(cache)


@pytest.fixture(scope="session")
def seed_align_dir(cache: Path) -> Path:
    from convert import sources

    return sources.seed_align_dir(cache)


@pytest.fixture(scope="session")
def facenet_graph(cache: Path) -> Path:
    from convert import sources

    return sources.facenet_graph(cache)


@pytest.fixture(scope="session")
def val_photos(faces_root: Path) -> list[Path]:
    return sorted(faces_root.glob("val/*/*.jpg"))


@pytest.fixture(scope="session")
def seed_mtcnn(seed_align_dir: Path):
    from convert.seed import SeedMTCNN

    return SeedMTCNN(seed_align_dir)


@pytest.fixture()
def models_copy(tmp_path: Path) -> Path:
    """A private copy of the committed models/ that a test may damage."""
    dest = tmp_path / "models"
    dest.mkdir()
    for f in MODELS.iterdir():
        if f.is_file() and not f.name.startswith("."):
            shutil.copy2(f, dest / f.name)
    return dest
