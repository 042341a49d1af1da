"""What facepi computes on some photos, as JSON: run on x86 and on aarch64, then compared.

    python tests/arch_probe.py PHOTO... > result.json       (any installed facepi)
    python tests/arch_probe.py --compare x86.json arm64.json

Per photo: every detected box with its score and landmarks, and the embedding of each
face. ``--compare`` pairs faces by box overlap and reports how well the two runs agree;
it exits 1 when they do not (a different face count, or an embedding cosine below
0.999 where both runs picked the same box).
"""

from __future__ import annotations

import json
import platform
import sys

import numpy as np

MIN_COSINE = 0.999  # the same box, the same model: only float rounding may differ between CPUs
SAME_BOX_IOU = 0.98  # "the same box": corners within ~1 % of the face's size


def probe(paths: list[str]) -> dict:
    from facepi.vision import runtime
    from facepi.vision.faces import DECODE_PIXELS, detect_bounded
    from facepi.vision.images import read_photo
    from facepi.vision.photos import load_pipeline

    pipe = load_pipeline()
    import cv2

    out = {"machine": platform.machine(), "numpy": np.__version__, "opencv": cv2.__version__,
           "backend": runtime.describe(pipe.embedder.model.backend()), "photos": {}}
    for p in paths:
        rgb, scale = read_photo(p, DECODE_PIXELS)
        boxes, points = detect_bounded(pipe.detector, rgb, scale=scale)
        embs = pipe.embedder.embed(np.stack([pipe.align(rgb, b, pt) for b, pt in zip(boxes, points, strict=True)])) \
            if len(boxes) else np.zeros((0, 0))
        out["photos"][p.rsplit("/", 1)[-1]] = [
            {"box": [round(float(v), 2) for v in b[:4]], "score": round(float(b[4]), 5),
             "points": np.round(pt, 2).tolist(), "embedding": np.round(e, 6).tolist()}
            for b, pt, e in zip(boxes, points, embs, strict=True)]
    return out


def iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def compare(a: dict, b: dict) -> dict:
    faces = same_count = 0
    cosines, ious, shifts, all_cosines = [], [], [], []
    for name, fa in a["photos"].items():
        fb = b["photos"].get(name, [])
        faces += len(fa)
        same_count += len(fa) == len(fb)
        for x in fa:
            best = max(fb, key=lambda y: iou(x["box"], y["box"]), default=None)
            if best is None:
                continue
            ious.append(iou(x["box"], best["box"]))
            shifts.append(float(np.abs(np.array(x["points"]) - np.array(best["points"])).max()))
            ea, eb = np.array(x["embedding"]), np.array(best["embedding"])
            all_cosines.append(float(ea @ eb / (np.linalg.norm(ea) * np.linalg.norm(eb))))
            if ious[-1] >= SAME_BOX_IOU:
                cosines.append(all_cosines[-1])
    return {"machines": [a["machine"], b["machine"]], "backends": [a["backend"], b["backend"]],
            "photos": len(a["photos"]), "photos_same_face_count": same_count, "faces": faces,
            "box_iou_min": round(min(ious), 4) if ious else None,
            "landmark_shift_max_px": round(max(shifts), 3) if shifts else None,
            "same_box_faces": len(cosines),
            "embedding_cosine_min": round(min(cosines), 6) if cosines else None,
            "embedding_cosine_median": round(float(np.median(cosines)), 6) if cosines else None,
            "any_box_cosine_min": round(min(all_cosines), 6) if all_cosines else None,
            "versions": [f"numpy {r['numpy']}, OpenCV {r.get('opencv')}" for r in (a, b)]}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--compare"]:
        a, b = (json.load(open(f)) for f in argv[1:3])
        report = compare(a, b)
        print(json.dumps(report, indent=1))
        ok = (report["photos_same_face_count"] == report["photos"] and report["same_box_faces"] > 0
              and report["embedding_cosine_min"] >= MIN_COSINE)
        return 0 if ok else 1
    json.dump(probe(argv), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
