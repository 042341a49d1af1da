"""Prove every converted file against the TensorFlow reference on real faces.

MTCNN: the full TFLite cascade against the seed's ``detect_face.py`` on every
photo of the 5-celebrity set (boxes matched at IoU >= 0.9, landmark error in
pixels), plus PNet alone at every pyramid size of a 640x480 frame.
FaceNet: cosine similarity of TFLite and TensorFlow embeddings of the same
aligned crops, batch-1 vs batch-N agreement, size and median latency.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facepi.vision import align, detect, runtime
from facepi.vision.detect import iou_matrix
from facepi.vision.images import list_images, read_rgb

TARGETS = {
    "mtcnn_matched": 0.98, "mtcnn_landmark_px": 1.0,
    "float32": {"min": 0.9999}, "float16": {"min": 0.999},
    "dynamic": {"min": 0.99, "mean": 0.995}, "int8": {"min": 0.99, "mean": 0.995},
}


def dataset_photos(faces_root: Path) -> list[tuple[str, str, Path]]:
    """(split, person, path) for every photo of the 5-celebrity set."""
    out = []
    for split in ("train", "val"):
        for person_dir in sorted((faces_root / split).iterdir()):
            if person_dir.is_dir():
                out.extend((split, person_dir.name, p) for p in list_images(person_dir))
    return out


def verify_mtcnn(detector: detect.Detector, seed, photos: list[Path], log=print) -> dict[str, Any]:
    ref_faces = matched = extra = 0
    errors: list[float] = []
    for i, path in enumerate(photos):
        rgb = read_rgb(path)
        rb, rp = seed.detect(rgb)
        tb, tp = detector.detect(rgb)
        ref_faces += len(rb)
        used = set()
        for k in range(len(rb)):
            if len(tb) == 0:
                break
            overlaps = iou_matrix(rb[k:k + 1, :4], tb[:, :4])[0]
            j = int(np.argmax(overlaps))
            if overlaps[j] >= 0.9 and j not in used:
                used.add(j)
                matched += 1
                errors.extend(np.linalg.norm(rp[k] - tp[j], axis=1).tolist())
        extra += len(tb) - len(used)
        if (i + 1) % 20 == 0 or i + 1 == len(photos):
            log(f"  mtcnn parity: {i + 1}/{len(photos)} photos")
    return {"photos": len(photos), "reference_faces": ref_faces, "matched_iou_0.9": matched,
            "matched_share": matched / max(ref_faces, 1), "extra_tflite_faces": extra,
            "landmark_error_px_mean": float(np.mean(errors)) if errors else None,
            "landmark_error_px_max": float(np.max(errors)) if errors else None}


def verify_pnet_levels(detector: detect.Detector, seed, photo: Path) -> dict[str, Any]:
    """PNet alone at every pyramid size of a 640x480 frame, TFLite vs the seed's TF net."""
    rgb = cv2.resize(read_rgb(photo), (640, 480), interpolation=cv2.INTER_AREA)
    pnet_tf = seed.nets[0]
    worst = 0.0
    sizes = []
    for scale in detect.pyramid_scales(480, 640, 20, 0.709):
        hs, ws = int(np.ceil(480 * scale)), int(np.ceil(640 * scale))
        x = ((cv2.resize(rgb, (ws, hs), interpolation=cv2.INTER_AREA).astype(np.float32) - 127.5)
             * detect.SCALE)[None]
        with seed.graph.as_default():
            reg_t, prob_t = pnet_tf(np.transpose(x, (0, 2, 1, 3)))
        reg_t = np.transpose(reg_t, (0, 2, 1, 3))[0]
        prob_t = np.transpose(prob_t, (0, 2, 1, 3))[0, :, :, 1]
        out = detector.nets["pnet"].run(x)
        worst = max(worst, float(np.abs(out["prob"][0] - prob_t).max()),
                    float(np.abs(out["reg"][0] - reg_t).max()))
        sizes.append([hs, ws])
    return {"frame": [480, 640], "levels": sizes, "max_abs_diff": worst}


def central_faces(detector: detect.Detector, photos: list[Path]):
    """(index, rgb, box, landmarks) of the most central face of each photo that has one."""
    for i, path in enumerate(photos):
        rgb = read_rgb(path)
        boxes, points = detector.detect(rgb)
        if len(boxes):
            k = align.central_face(boxes, rgb.shape)
            yield i, rgb, boxes[k], points[k]


def aligned_crops(detector: detect.Detector, photos: list[Path], log=print) -> tuple[np.ndarray, list[int]]:
    """Seed-style 160x160 crops (margin 32) of the most central face; indices of photos that had one."""
    found = [(i, align.crop(rgb, box)) for i, rgb, box, _ in central_faces(detector, photos)]
    log(f"  aligned {len(found)}/{len(photos)} photos")
    return np.stack([c for _, c in found]), [i for i, _ in found]


def calibration_crops(detector: detect.Detector, photos: list[Path], log=print) -> np.ndarray:
    """Real faces for int8 calibration: each face cropped with margins 16, 32 and 48, plus the
    margin-32 crop mirrored. Only the margin-32 crops left int8's worst face at cosine 0.986;
    this spread of real framings brings it to 0.990 (docs/converter.md "Verification")."""
    crops = []
    for _, rgb, box, _ in central_faces(detector, photos):
        base = align.crop(rgb, box)
        crops += [base, base[:, ::-1], align.crop(rgb, box, margin=16), align.crop(rgb, box, margin=48)]
    log(f"  {len(crops)} calibration crops from {len(photos)} photos")
    return np.stack(crops)


def standardise(crops: np.ndarray) -> np.ndarray:
    return ((crops.astype(np.float32) - 127.5) * detect.SCALE).astype(np.float32)


def median_ms(fn: Callable[[], Any], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def tflite_embed(model: bytes, x: np.ndarray, batch: int = 1, threads: int = 2) -> np.ndarray:
    it = runtime.make_interpreter(model, threads)
    it.resize_tensor_input(it.get_input_details()[0]["index"], [batch, *x.shape[1:]], strict=False)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    res = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n, *x.shape[1:]), np.float32)])
        it.set_tensor(inp["index"], runtime.quantize_input(inp, chunk))
        it.invoke()
        res.append(runtime.dequantize_output(out, it.get_tensor(out["index"]))[:n].copy())
    return np.concatenate(res)


def face_latency_ms(model: bytes, x1: np.ndarray, runs: int, threads: int = 2) -> float:
    """Median time of one batch-1 embedding, (de)quantization included."""
    it = runtime.make_interpreter(model, threads)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]

    def once() -> None:
        it.set_tensor(inp["index"], runtime.quantize_input(inp, x1))
        it.invoke()
        runtime.dequantize_output(out, it.get_tensor(out["index"]))

    return median_ms(once, runs)


def verify_facenet(models: dict[str, bytes], reference, x: np.ndarray, is_val: np.ndarray,
                   runs: int = 15, log=print) -> dict[str, Any]:
    log(f"  TensorFlow reference embeddings of {len(x)} crops ...")
    ref = np.stack([reference.embed_one(xi) for xi in x])
    rows: dict[str, Any] = {"tensorflow_float32": {
        "ms_per_face_median": median_ms(lambda: reference.embed_one(x[0]), runs)}}
    for precision, model in models.items():
        log(f"  {precision}: embeddings, batch agreement, latency ...")
        emb = tflite_embed(model, x, batch=1)
        cos = np.sum(emb * ref, axis=1)
        emb8 = tflite_embed(model, x[:8], batch=8)
        rows[precision] = {
            "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
            "cosine_min_val": float(cos[is_val].min()) if is_val.any() else None,
            "batch8_vs_batch1_max_abs_diff": float(np.abs(emb8 - emb[:8]).max()),
            "size_bytes": len(model), "ms_per_face_median": face_latency_ms(model, x[:1], runs)}
    return rows


def check_targets(report: dict[str, Any]) -> list[str]:
    """Human-readable list of targets the report misses (empty when all are met)."""
    misses = []
    live = report.get("minifasnet")
    if live and "skipped" not in live:
        from facepi_convert import verify_liveness

        misses += verify_liveness.check_targets(live)
    m = report.get("mtcnn")
    if m:
        if m["matched_share"] < TARGETS["mtcnn_matched"]:
            misses.append(f"MTCNN matched {m['matched_share']:.3f} < {TARGETS['mtcnn_matched']}")
        if m["landmark_error_px_mean"] is not None and m["landmark_error_px_mean"] >= 1.0:
            misses.append(f"MTCNN landmark error {m['landmark_error_px_mean']:.3f} px >= 1 px")
    rows = [("FaceNet", p, r) for p, r in report.get("facenet", {}).items()]
    rows += [("MobileFaceNet", p, r) for p, r in report.get("mobilefacenet", {}).items()]
    for model, precision, row in rows:
        t = TARGETS.get(precision)
        if not isinstance(t, dict):
            continue
        if row["cosine_min"] < t["min"]:
            misses.append(f"{model} {precision} cosine min {row['cosine_min']:.5f} < {t['min']}")
        if "mean" in t and row["cosine_mean"] < t["mean"]:
            misses.append(f"{model} {precision} cosine mean {row['cosine_mean']:.5f} < {t['mean']}")
    return misses


def format_table(report: dict[str, Any]) -> str:
    lines = []
    m = report.get("mtcnn")
    if m:
        lines += [
            "MTCNN (TFLite cascade vs seed detect_face.py on TensorFlow, minsize 20, "
            "thresholds [0.6, 0.7, 0.7], factor 0.709)",
            f"  photos {m['photos']}, reference faces {m['reference_faces']}, matched at IoU>=0.9 "
            f"{m['matched_iou_0.9']} ({100 * m['matched_share']:.1f} %), extra TFLite faces "
            f"{m['extra_tflite_faces']}",
            f"  landmark error mean {m['landmark_error_px_mean']:.4f} px, "
            f"max {m['landmark_error_px_max']:.4f} px",
        ]
    p = report.get("pnet_levels")
    if p:
        lines.append(f"  PNet alone at {len(p['levels'])} pyramid sizes of a 640x480 frame: "
                     f"max |diff| {p['max_abs_diff']:.2e}")
    f = report.get("facenet")
    if f:
        lines += ["", f"FaceNet 20180408-102900 ({report.get('facenet_crops', '?')} aligned crops)",
                  f"  {'precision':<20}{'cos min':>10}{'cos mean':>10}{'min val':>10}"
                  f"{'b8-b1':>10}{'MB':>8}{'ms/face':>9}{'speed-up':>9}"]
        base = f["tensorflow_float32"]["ms_per_face_median"]
        for name, row in f.items():
            if name == "tensorflow_float32":
                lines.append(f"  {name:<20}{'ref':>10}{'ref':>10}{'ref':>10}{'':>10}{'':>8}"
                             f"{row['ms_per_face_median']:>9.1f}{1.0:>8.2f}x")
                continue
            lines.append(
                f"  {name:<20}{row['cosine_min']:>10.5f}{row['cosine_mean']:>10.5f}"
                f"{row['cosine_min_val'] or float('nan'):>10.5f}{row['batch8_vs_batch1_max_abs_diff']:>10.1e}"
                f"{row['size_bytes'] / 1e6:>8.1f}{row['ms_per_face_median']:>9.1f}"
                f"{base / row['ms_per_face_median']:>8.2f}x")
    mf = report.get("mobilefacenet")
    if mf:
        lines += ["", "MobileFaceNet (vs the shipped batch-2 file, fed in pairs, ArcFace-aligned crops)",
                  f"  {'precision':<20}{'cos min':>10}{'cos mean':>10}{'MB':>8}{'ms/face':>9}"]
        for name, row in mf.items():
            if name == "shipped_batch2":
                lines.append(f"  {'shipped (batch 2)':<20}{'ref':>10}{'ref':>10}{row['size_bytes'] / 1e6:>8.1f}"
                             f"{row['ms_per_face_median']:>9.1f}")
            else:
                lines.append(f"  {name:<20}{row['cosine_min']:>10.5f}{row['cosine_mean']:>10.5f}"
                             f"{row['size_bytes'] / 1e6:>8.1f}{row['ms_per_face_median']:>9.1f}")
    if report.get("minifasnet"):
        from facepi_convert import verify_liveness

        lines += verify_liveness.format_table(report["minifasnet"])
    misses = check_targets(report)
    lines += ["", "targets: all met" if not misses else "targets missed:\n  " + "\n  ".join(misses)]
    return "\n".join(lines)


def landmark_crops(detector: detect.Detector, photos: list[Path], size: int, face_fraction: float) -> np.ndarray:
    """ArcFace-template crops (five-landmark similarity warp) of the most central face."""
    return np.stack([align.warp(rgb, marks, size, face_fraction)
                     for _, rgb, _, marks in central_faces(detector, photos)])


def verify_mobilefacenet(original: Path, models: dict[str, bytes], x: np.ndarray, runs: int = 15
                         ) -> dict[str, Any]:
    """Each variant against the shipped batch-2 file, fed in pairs, on the same crops."""
    it = runtime.make_interpreter(original.read_bytes(), 2)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    xs = x if len(x) % 2 == 0 else np.concatenate([x, x[-1:]])
    ref = []
    for i in range(0, len(xs), 2):
        it.set_tensor(inp, xs[i:i + 2])
        it.invoke()
        ref.append(it.get_tensor(out).copy())
    r = np.concatenate(ref)[:len(x)]
    r /= np.linalg.norm(r, axis=1, keepdims=True)

    def pair() -> None:
        it.set_tensor(inp, xs[:2])
        it.invoke()

    rows: dict[str, Any] = {"shipped_batch2": {"ms_per_face_median": median_ms(pair, runs) / 2,
                                               "size_bytes": original.stat().st_size}}
    for precision, model in models.items():
        e = tflite_embed(model, x, batch=1)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        cos = np.sum(e * r, axis=1)
        rows[precision] = {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
                           "size_bytes": len(model), "ms_per_face_median": face_latency_ms(model, x[:1], runs)}
    return rows
