"""MobileFaceNet: the pinned npm download, made batch-1, on real faces; and `facepi evaluate`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import MODELS, ROOT
from facepi_convert import mobilefacenet, sources, verify

from facepi.cli import main as facepi_main
from facepi.identity.gallery import GalleryError
from facepi.identity.store import load as load_gallery
from facepi.vision import runtime
from facepi.vision.detect import Detector

DEV = ROOT.parent / "shared" / "data" / "celeba-dev"


@pytest.fixture(scope="module")
def shipped(cache) -> Path:
    return sources.mobilefacenet_tflite(cache)


@pytest.fixture(scope="module")
def arcface_crops(faces_root):
    photos = sorted(faces_root.glob("val/*/*.jpg"))
    return verify.standardise(verify.landmark_crops(Detector(MODELS), photos, 112, 1.0))


def test_batch1_rewrite_equals_the_shipped_model(shipped, arcface_crops):
    model = mobilefacenet.to_batch1(shipped)
    report = verify.verify_mobilefacenet(shipped, {"float32": model}, arcface_crops, runs=2)
    assert report["float32"]["cosine_min"] >= 0.9999, report
    e1 = verify.tflite_embed(model, arcface_crops, batch=1)
    e4 = verify.tflite_embed(model, arcface_crops, batch=4)
    np.testing.assert_allclose(e4, e1, atol=1e-4)
    assert e1.shape == (25, 192)
    # the committed file is exactly this conversion
    assert runtime.load_model_bytes(runtime.model_spec("mobilefacenet_float32.tflite", MODELS)) == model


def test_dynamic_variant_runs_and_is_recorded(shipped, arcface_crops):
    model = mobilefacenet.dynamic_range(mobilefacenet.to_batch1(shipped))
    report = verify.verify_mobilefacenet(shipped, {"dynamic": model}, arcface_crops, runs=2)
    assert report["dynamic"]["cosine_min"] >= 0.99 and report["dynamic"]["cosine_mean"] >= 0.995, report
    assert report["dynamic"]["size_bytes"] < 2_000_000


def test_wrong_file_is_named(tmp_path, facenet_graph):
    bad = tmp_path / "MobileFaceNet.tflite"
    bad.write_bytes(b"not a model")
    with pytest.raises(mobilefacenet.MobileFaceNetError, match="MobileFaceNet.tflite"):
        mobilefacenet.to_batch1(bad)
    with pytest.raises(mobilefacenet.MobileFaceNetError, match="missing"):
        mobilefacenet.to_batch1(tmp_path / "absent.tflite")


def test_default_model_follows_its_manifest(faces_root):
    from facepi.vision.photos import load_pipeline

    manifest = runtime.load_manifest(MODELS)
    assert manifest["default_embedder"] == "mobilefacenet_dynamic.tflite"
    p = load_pipeline()
    assert (p.mode, p.size, p.embedder.dim) == ("landmarks", 112, 192)  # from the manifest, not code
    r = p.photo(sorted((faces_root / "val" / "madonna").glob("*.jpg"))[0])
    assert r.error is None and r.faces[0].crop.shape == (112, 112, 3)
    np.testing.assert_allclose(np.linalg.norm(r.embeddings, axis=1), 1.0, atol=1e-5)


def test_a_gallery_of_another_model_is_refused(tmp_path, faces_root, capsys):
    g = tmp_path / "facenet.npz"
    assert facepi_main(["train", str(faces_root / "val"), str(g), "--embedder", "facenet_dynamic.tflite"]) == 0
    assert load_gallery(g).model == "facenet-20180408-102900"
    with pytest.raises(GalleryError, match="Re-enrol from the original photos"):
        load_gallery(g, expect_model=mobilefacenet.MODEL_ID)
    capsys.readouterr()
    assert facepi_main(["enroll", "someone", str(faces_root / "val" / "madonna"), "--gallery", str(g),
                        "--embedder", "mobilefacenet_float32.tflite"]) == 2
    assert "Re-enrol" in capsys.readouterr().err


def test_evaluate_command_with_plot(tmp_path, faces_root, capsys):
    plot = tmp_path / "eval.png"
    assert facepi_main(["evaluate", str(faces_root / "train"), "--seed", "1", "--json", "--plot", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"top1", "at_far", "default_threshold", "no_face_photos", "model"} <= set(report)
    assert report["model"].startswith(mobilefacenet.MODEL_ID) and report["top1"] >= 0.95
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


@pytest.mark.skipif(not DEV.is_dir(), reason="../shared/data/celeba-dev is absent (research-only data, "
                                             "not in a user's clone)")
def test_open_set_on_in_the_wild_photos(tmp_path, capsys):
    """A quick slice of the dev data (read in place, never copied): 40 identities."""
    subset = tmp_path / "subset"
    subset.mkdir()
    for d in sorted(DEV.iterdir())[:40]:
        os.symlink(d, subset / d.name)
    assert facepi_main(["evaluate", str(subset), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["top1"] >= 0.93 and report["at_far"]["0.01"]["tar"] >= 0.85, report


def test_full_int8_variant_runs_with_int8_io(shipped, arcface_crops, faces_root):
    """Full-integer MobileFaceNet from ai-edge-quantizer, calibrated on real faces; int8 input and
    output are (de)quantized by facepi.vision.runtime. Measured: cosine min 0.90, mean 0.97 (docs/converter.md)."""
    train = sorted(faces_root.glob("train/*/*.jpg"))[::4]
    calib = verify.standardise(verify.landmark_crops(Detector(MODELS), train, 112, 1.0))
    model = mobilefacenet.full_int8(mobilefacenet.to_batch1(shipped), calib)
    it = runtime.make_interpreter(model)
    assert it.get_input_details()[0]["dtype"] == np.int8
    report = verify.verify_mobilefacenet(shipped, {"int8": model}, arcface_crops, runs=1)
    assert report["int8"]["cosine_mean"] >= 0.9, report
