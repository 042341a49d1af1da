"""MTCNN: conversion from the real seed weights, and parity with the seed's detect_face.py."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODELS
from facepi_convert import mtcnn, verify
from facepi_convert.cli import main as convert_main

from facepi.vision.detect import Detector, DetectorParams, nms, pyramid_scales
from facepi.vision.images import read_rgb


def test_committed_mtcnn_matches_seed_on_real_photos(seed_mtcnn, val_photos):
    """The committed nets, run as a cascade, find the seed's faces with the seed's landmarks."""
    report = verify.verify_mtcnn(Detector(MODELS), seed_mtcnn, val_photos, log=lambda m: None)
    assert report["reference_faces"] >= len(val_photos)
    assert report["matched_share"] >= 0.98, report
    assert report["landmark_error_px_mean"] < 1.0, report


def test_pnet_matches_seed_at_every_pyramid_size(seed_mtcnn, val_photos):
    report = verify.verify_pnet_levels(Detector(MODELS), seed_mtcnn, val_photos[0])
    assert len(report["levels"]) == len(pyramid_scales(480, 640, 20, 0.709)) == 10
    assert report["max_abs_diff"] < 1e-4, report


def test_detector_keeps_one_interpreter_per_pyramid_shape(val_photos):
    det = Detector(MODELS)
    rgb = read_rgb(val_photos[0])
    det.detect(rgb)
    first = dict(det.nets["pnet"].cache)
    det.detect(rgb)
    assert det.nets["pnet"].cache == first  # nothing re-allocated on the second frame
    assert len(first) == len(pyramid_scales(*rgb.shape[:2], 20, 0.709))


def test_minsize_and_thresholds_are_honoured(val_photos):
    rgb = read_rgb(val_photos[0])
    loose = Detector(MODELS).detect(rgb)[0]
    strict = Detector(MODELS, DetectorParams(thresholds=(0.6, 0.7, 0.99999))).detect(rgb)[0]
    assert len(loose) >= 1 and len(strict) <= len(loose)
    big_only = Detector(MODELS, DetectorParams(minsize=400)).detect(rgb)[0]
    assert len(big_only) == 0  # the 200x300 photo has no face of 400 pixels


def test_bad_params_are_named():
    with pytest.raises(ValueError, match="minsize=5"):
        DetectorParams(minsize=5)
    with pytest.raises(ValueError, match="factor=1.5"):
        DetectorParams(factor=1.5)


def test_nms_union_and_min():
    boxes = np.array([[0, 0, 9, 9, 0.9], [1, 1, 10, 10, 0.8], [0, 0, 4, 4, 0.7], [50, 50, 60, 60, 0.6]])
    assert nms(boxes, 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, 0.5, "min").tolist() == [0, 3]  # the small box lies inside the first


def test_bad_weight_files_get_named_errors(tmp_path, seed_align_dir, models_copy):
    (tmp_path / "w").mkdir()
    good = (seed_align_dir / "det1.npy").read_bytes()
    (tmp_path / "w" / "det1.npy").write_bytes(good[: len(good) // 2])  # truncated
    (tmp_path / "w" / "det2.npy").write_bytes((seed_align_dir / "det2.npy").read_bytes())
    with pytest.raises(mtcnn.WeightsError, match="det1.npy"):
        mtcnn.convert_net("pnet", tmp_path / "w" / "det1.npy")
    with pytest.raises(mtcnn.WeightsError, match="missing layers"):
        mtcnn.convert_net("onet", tmp_path / "w" / "det2.npy")  # RNet weights for ONet
    before = {p.name: p.read_bytes() for p in models_copy.iterdir()}
    code = convert_main(["convert", "--mtcnn-dir", str(tmp_path / "w"), "--models", str(models_copy)])
    assert code == 2
    assert {p.name: p.read_bytes() for p in models_copy.iterdir()} == before
