"""Model files are checked against the manifest; photos of every kind become RGB."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facepi.fileio import atomic_write_json
from facepi.vision import runtime
from facepi.vision.detect import Detector
from facepi.vision.images import ImageError, read_rgb, to_rgb


def test_committed_models_match_the_manifest():
    manifest = runtime.load_manifest()
    for name in ("mtcnn_pnet.tflite", "mtcnn_rnet.tflite", "mtcnn_onet.tflite",
                 manifest["default_embedder"]):
        spec = runtime.model_spec(name)
        it = runtime.make_interpreter(runtime.load_model_bytes(spec))
        runtime.check_tensors(it, spec)


def test_tampered_model_is_refused(models_copy):
    path = models_copy / "mtcnn_rnet.tflite"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(runtime.ModelError, match=r"mtcnn_rnet.tflite: sha256 .* manifest expects"):
        Detector(models_copy)


def test_truncated_and_missing_models_are_named(models_copy):
    (models_copy / "mtcnn_onet.tflite").write_bytes(b"\0" * 10)
    with pytest.raises(runtime.ModelError, match=r"mtcnn_onet.tflite: 10 bytes"):
        Detector(models_copy)
    (models_copy / "mtcnn_onet.tflite").unlink()
    with pytest.raises(runtime.ModelError, match="missing; produce it with 'facepi-convert'"):
        Detector(models_copy)


def test_manifest_shape_mismatch_is_named(models_copy):
    manifest = json.loads((models_copy / "manifest.json").read_text())
    manifest["models"]["mtcnn_rnet.tflite"]["inputs"][0]["shape"] = [1, 12, 12, 3]
    atomic_write_json(models_copy / "manifest.json", manifest)
    det = Detector(models_copy)
    with pytest.raises(runtime.ModelError, match="input tensors"):
        det.nets["rnet"].interpreter((1, 24, 24, 3))


def test_broken_manifest_is_named(tmp_path):
    with pytest.raises(runtime.ModelError, match="no model manifest"):
        runtime.load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(runtime.ModelError, match="not valid JSON"):
        runtime.load_manifest(tmp_path)


def test_every_pixel_format_becomes_rgb(tmp_path, val_photos):
    bgr = cv2.imread(str(val_photos[0]))
    rgb = read_rgb(val_photos[0])
    assert rgb.dtype == np.uint8 and rgb.shape == bgr.shape
    np.testing.assert_array_equal(rgb, bgr[:, :, ::-1])
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    assert to_rgb(gray).shape == bgr.shape
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    np.testing.assert_array_equal(read_rgb(tmp_path / "rgba.png"), rgb)
    cv2.imwrite(str(tmp_path / "16.png"), bgr.astype(np.uint16) * 257)
    np.testing.assert_array_equal(read_rgb(tmp_path / "16.png"), rgb)


def test_bad_photos_are_named(tmp_path, val_photos):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not a photo")
    (tmp_path / "cut.jpg").write_bytes(val_photos[0].read_bytes()[:200])
    for name, why in (("empty.jpg", "empty file"), ("notes.jpg", "not a decodable image"),
                      ("cut.jpg", "not a decodable image"), ("absent.jpg", "cannot read")):
        with pytest.raises(ImageError, match=f"{name}: {why}"):
            read_rgb(tmp_path / name)


def test_threads_follow_the_cores_the_process_may_use():
    """0 (the default) means the CPUs in this process's affinity mask (systemd's CPUAffinity=), at most 4;
    what each model runs on is read from the interpreter, not assumed."""
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT

    def models(*args: str, cpus: set[int] | None = None) -> list[dict]:
        proc = subprocess.run([sys.executable, "-m", "facepi", "models", "--json", *args], cwd=ROOT,
                              capture_output=True, text=True,
                              preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        assert proc.returncode == 0, proc.stderr
        return [m for m in json.loads(proc.stdout)["models"] if m["status"] == "ok"]

    mine = min(len(os.sched_getaffinity(0)), 4)
    assert {m["threads"] for m in models()} == {mine}
    assert {m["threads"] for m in models(cpus={min(os.sched_getaffinity(0))})} == {1}
    assert {m["threads"] for m in models("--threads", "3")} == {3}
    assert all(m["delegate"] == "XNNPACK" and m["partitions"] >= 1 for m in models())
