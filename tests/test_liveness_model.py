"""MiniFASNet liveness: the converted files against the ONNX originals, the crop rule at the frame
edge, and the on-device scorer on real live and attack frames."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODELS, ROOT

from facepi.vision import liveness, runtime
from facepi.vision.detect import Detector
from facepi.vision.images import read_rgb

LIVENESS = ROOT.parent / "shared" / "data" / "liveness-dev"
ONNX = ROOT.parent / "shared" / "models" / "minifasnet"
needs_data = pytest.mark.skipif(not LIVENESS.is_dir(), reason=f"{LIVENESS} absent (development data)")


def nuaa(kind: str, subject: str, n: int):
    return sorted((LIVENESS / "nuaa" / kind / subject).glob("*.jpg"))[:: 20][:n]


# ---- the crop rule (pure geometry) -------------------------------------------------------------

def test_context_crop_centred_away_from_the_edge():
    box = np.array([300.0, 200.0, 340.0, 250.0])  # 40 x 50, centre (320, 225)
    x1, y1, x2, y2 = liveness.context_box(box, (480, 640, 3), 2.7)
    assert (x1, y1, x2, y2) == (int(320 - 54), int(225 - 67.5), int(320 + 54), int(225 + 67.5))


def test_context_crop_is_shifted_inside_at_the_edge_never_padded():
    box = np.array([5.0, 200.0, 65.0, 280.0])  # 60 x 80 at the left edge
    x1, y1, x2, y2 = liveness.context_box(box, (480, 640, 3), 4.0)
    assert x1 == 0 and x2 == 240  # shifted right: same width (240), face off-centre, towards the edge
    assert (y1, y2) == (80, 400)  # vertical: untouched
    box = np.array([600.0, 430.0, 630.0, 470.0])  # bottom-right corner
    x1, y1, x2, y2 = liveness.context_box(box, (480, 640, 3), 2.7)
    assert x2 == 639 and y2 == 479 and x1 == int(639 - 30 * 2.7) and y1 == int(479 - 40 * 2.7)


def test_context_scale_is_reduced_when_the_face_is_too_big_for_it():
    box = np.array([100.0, 40.0, 300.0, 440.0])  # 400 px tall in a 480 frame: x4 cannot fit
    x1, y1, x2, y2 = liveness.context_box(box, (480, 640, 3), 4.0)
    s = 479 / 400
    assert (y1, y2) == (0, 479)
    assert x2 - x1 == pytest.approx(200 * s, abs=1)  # same aspect, less context
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[:, :, 0] = 255  # red in RGB
    crop = liveness.context_crop(rgb, box, 4.0)
    assert crop.shape == (80, 80, 3) and crop.dtype == np.float32
    assert (crop[..., 2] == 255).all() and (crop[..., 0] == 0).all()  # BGR order


# ---- the converter: TFLite equals the ONNX original on real faces -----------------------------

@needs_data
@pytest.mark.skipif(not ONNX.is_dir(), reason=f"{ONNX} absent (the ONNX originals)")
def test_tflite_equals_onnxruntime_on_real_faces():
    pytest.importorskip("onnxruntime")
    from facepi_convert import minifasnet

    files = minifasnet.check_source(ONNX)
    for net in minifasnet.NETS:  # the committed files are exactly this conversion (it is deterministic)
        assert minifasnet.convert(files[net.onnx]) == (MODELS / net.tflite).read_bytes(), net.tflite
    det = Detector(MODELS, threads=1)
    frames = nuaa("live", "0001", 3) + nuaa("attack", "0001", 3)
    for net in minifasnet.NETS:
        model = runtime.Model.load(net.tflite, MODELS, 1)
        assert model.spec.entry["context_scale"] == net.scale
        crops = []
        for p in frames:
            rgb = read_rgb(p)
            boxes, _ = det.detect(rgb)
            crops.append(liveness.context_crop(rgb, boxes[0], net.scale))
        x = np.stack(crops)
        ref = minifasnet.onnx_logits(files[net.onnx], x)
        out = model.spec.outputs[0]["name"]
        got = np.stack([model.run(xi[None])[out][0] for xi in x])
        np.testing.assert_allclose(got, ref, atol=1e-3)
        p_ref = liveness.softmax(ref)[:, 1]
        assert p_ref[:3].min() > p_ref[3:].max(), p_ref  # class 1 is live


def test_a_wrong_onnx_file_is_named(tmp_path):
    from facepi_convert import minifasnet

    with pytest.raises(minifasnet.MiniFASNetError, match="MiniFASNetV2.onnx: missing"):
        minifasnet.check_source(tmp_path)
    for net in minifasnet.NETS:
        (tmp_path / net.onnx).write_bytes(b"not onnx")
    with pytest.raises(minifasnet.MiniFASNetError, match="sha256"):
        minifasnet.check_source(tmp_path)


# ---- on the device ----------------------------------------------------------------------------

@needs_data
def test_scorer_separates_real_live_and_attack_frames():
    model = liveness.LivenessModel.load(MODELS, threads=1)
    assert model.files == ["minifasnet_v2_float32.tflite", "minifasnet_v1se_float32.tflite"]
    det = Detector(MODELS, threads=1)
    scores = {}
    for kind in ("live", "attack"):
        s = []
        for p in nuaa(kind, "0002", 4):
            rgb = read_rgb(p)
            boxes, _ = det.detect(rgb)
            s.append(model.score(rgb, boxes[0]))
        scores[kind] = s
    assert all(0.0 <= v <= 1.0 for v in scores["live"] + scores["attack"])
    assert min(scores["live"]) > max(scores["attack"]), scores


def test_a_models_dir_without_liveness_says_so(tmp_path):
    import json

    (tmp_path / "manifest.json").write_text(json.dumps({"models": {}}))
    with pytest.raises(liveness.LivenessUnavailable, match="names no liveness models"):
        liveness.LivenessModel.load(tmp_path)
