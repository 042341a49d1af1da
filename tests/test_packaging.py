"""The built wheel, installed non-editable into a fresh venv, runs from any directory.

A checkout hides packaging mistakes (models found next to the source, a module
importable because the working directory is the checkout): this builds the wheel
the way a Pi install does and uses it from ``/``, without the optional
scikit-learn, as the default install on a Pi is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

PIP = ["-m", "pip", "--disable-pip-version-check", "-q"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, *PIP, "wheel", "--no-deps", str(ROOT), "-w", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("facepi-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run([str(venv / "bin" / "python"), *PIP, "install", str(wheel)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv


def test_wheel_carries_the_models_and_no_generic_module(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    manifest = json.loads((ROOT / "models" / "manifest.json").read_text())
    bundled = {n for n in manifest["models"] if (ROOT / "models" / n).exists()}
    assert {f"facepi/models/{n}" for n in bundled | {"manifest.json"}} <= set(names)
    top = {n.split("/")[0] for n in names if not n.startswith("facepi-")}
    assert top == {"facepi", "facepi_convert"}, top  # no top-level 'convert' to collide with other packages


def test_installed_wheel_runs_from_any_directory(installed, faces_root, tmp_path):
    facepi = str(installed / "bin" / "facepi")
    run = lambda *a: subprocess.run([facepi, *a], cwd="/", capture_output=True, text=True)  # noqa: E731
    models = run("models", "--json")
    assert models.returncode == 0, models.stderr
    report = json.loads(models.stdout)
    assert Path(report["dir"]).is_relative_to(installed), report["dir"]  # the wheel's own copy, not the checkout
    ok = [m for m in report["models"] if m["status"] == "ok"]
    assert {m["file"] for m in ok} >= {"mtcnn_pnet.tflite", "mtcnn_rnet.tflite", "mtcnn_onet.tflite",
                                       report["default_embedder"]}
    assert all(m["delegate"] == "XNNPACK" and m["runtime"].startswith("ai-edge-litert") for m in ok), ok

    # the whole household path on real photos: train a gallery from folders, classify held-out photos
    data = tmp_path / "train"
    people = ["ben_afflek", "madonna"]
    for p in people:
        (data / p).mkdir(parents=True)
        for src in sorted((faces_root / "train" / p).glob("*.jpg"))[:5]:
            (data / p / src.name).symlink_to(src)
    gallery = tmp_path / "gallery.npz"
    train = run("train", str(data), str(gallery))
    assert train.returncode == 0, train.stderr
    for p in people:
        got = run("classify", str(faces_root / "val" / p), str(gallery), "--json")
        assert got.returncode == 0, got.stderr
        names = [r["name"] for r in json.loads(got.stdout)["results"]]
        assert names.count(p) >= len(names) - 1, (p, names)

    # scikit-learn is an extra: the default install has none, and the SVM says what to install
    assert subprocess.run([str(installed / "bin" / "python"), "-c", "import sklearn"],
                          capture_output=True).returncode != 0
    svm = run("train", str(data), str(tmp_path / "svm.npz"), "--classifier", "svm")
    assert svm.returncode == 2 and "pip install 'facepi[svm]'" in svm.stderr, svm.stderr
    assert not (tmp_path / "svm.npz").exists() and not (tmp_path / "svm.db").exists()
