"""Recognition-core benchmark: per-stage medians on this machine, TFLite vs the TensorFlow references.

    .venv/bin/python bench/bench_core.py [--runs 15] [--threads 2]

Needs the convert extra (TensorFlow, for the reference rows) and the pinned
sources in the cache (facepi-convert fetch). Prints medians and ratios measured in
the same run; nothing here is a pass/fail test. Precisions whose files are not in
models/ (only the default is committed) are skipped: make them with facepi-convert.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from _proc import run_with_peak_rss  # noqa: E402
from facepi_convert import facenet, sources  # noqa: E402
from facepi_convert.verify import median_ms  # noqa: E402

from facepi.identity.store import load as load_gallery  # noqa: E402
from facepi.vision import align, runtime  # noqa: E402
from facepi.vision.detect import Detector, DetectorParams  # noqa: E402
from facepi.vision.images import read_rgb  # noqa: E402


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    _, _, mb, wall = run_with_peak_rss(cmd, ROOT)
    return mb, wall


def seed_classify(gallery: str, val_dir: str) -> None:
    """The seed's way, in one process: TF MTCNN + TF FaceNet graph + an SVM, on the val photos."""
    from facepi_convert.seed import SeedMTCNN
    from sklearn.svm import SVC


    cache = sources.cache_dir()
    seed = SeedMTCNN(sources.seed_align_dir(cache))
    ref = facenet.Reference(facenet.load_graph_def(sources.facenet_graph(cache)))
    g = load_gallery(gallery)
    svm = SVC(kernel="linear").fit(g.embeddings, g.labels)
    for p in sorted(Path(val_dir).glob("*/*.jpg")):
        rgb = read_rgb(p)
        boxes, _ = seed.detect(rgb)
        crop = align.crop(rgb, boxes[align.central_face(boxes, rgb.shape)])
        svm.predict(ref.embed_one((crop.astype(np.float32) - 127.5) / 128.0)[None])


def test_frame(faces: Path) -> np.ndarray:
    """A 640x480 frame made from the first val photo."""
    photo = sorted((faces / "val").glob("*/*.jpg"))[0]
    return cv2.resize(read_rgb(photo), (640, 480), interpolation=cv2.INTER_AREA)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed-classify", nargs=2, metavar=("GALLERY", "VAL_DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--facepi-mtcnn", type=int, metavar="MINSIZE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.seed_classify:
        seed_classify(*args.seed_classify)
        return 0
    if args.facepi_mtcnn:  # as on the device: a process without TensorFlow in it
        det = Detector(params=DetectorParams(minsize=args.facepi_mtcnn), threads=args.threads)
        frame = test_frame(sources.celebrity_faces(sources.cache_dir()))
        print(median_ms(lambda: det.detect(frame), args.runs))
        return 0

    from facepi_convert.seed import SeedMTCNN

    from facepi.identity.classify import Classifier
    from facepi.vision.embed import Embedder
    from facepi.vision.photos import load_pipeline
    from facepi.workflow import train

    cache = sources.cache_dir()
    faces = sources.celebrity_faces(cache)
    frame = test_frame(faces)
    seed = SeedMTCNN(sources.seed_align_dir(cache), threads=args.threads)
    print(f"facepi core benchmark: {os.cpu_count()} cores, {args.threads} threads, median of {args.runs} runs")
    print(f"{'stage':<44}{'facepi ms':>11}{'TF ms':>10}{'speed-up':>10}")

    for minsize in (20, 60):
        # facepi's side runs in its own process without TensorFlow, as on the device: in this
        # process TensorFlow's idle worker threads would compete with it for the two cores.
        ours = float(subprocess.run([sys.executable, __file__, "--facepi-mtcnn", str(minsize), "--runs",
                                     str(args.runs), "--threads", str(args.threads)], capture_output=True,
                                    text=True, check=True, cwd=ROOT).stdout.strip().splitlines()[-1])
        seed.params = (minsize, [0.6, 0.7, 0.7], 0.709)
        theirs = median_ms(lambda: seed.detect(frame), args.runs)
        print(f"{f'MTCNN 640x480, minsize {minsize}':<44}{ours:>11.1f}{theirs:>10.1f}{theirs / ours:>9.2f}x")

    det = Detector(threads=args.threads)
    boxes, points = det.detect(frame)
    box, marks = boxes[0], points[0]
    print(f"{'align crop (160x160)':<44}{median_ms(lambda: align.crop(frame, box), args.runs):>11.3f}")
    print(f"{'align landmarks (similarity warp)':<44}"
          f"{median_ms(lambda: align.warp(frame, marks), args.runs):>11.3f}")

    crop = align.crop(frame, box)
    ref = facenet.Reference(facenet.load_graph_def(sources.facenet_graph(cache)), args.threads)
    x = ((crop.astype(np.float32) - 127.5) / 128.0).astype(np.float32)
    tf_ms = median_ms(lambda: ref.embed_one(x), args.runs)
    print(f"{'FaceNet per face, TensorFlow float32 (ref)':<44}{'':>11}{tf_ms:>10.1f}{1.0:>9.2f}x")
    manifest = runtime.load_manifest()
    for name, entry in manifest["models"].items():
        if entry.get("kind") != "embedder":
            continue
        label = f"{entry['model'].split('-')[0]} per face, {entry['precision']}"
        if not (runtime.models_dir() / name).exists():
            print(f"{label:<44}{'(not converted here; skipped)':>31}")
            continue
        emb = Embedder(file=name, threads=args.threads)
        face = (align.warp(frame, marks, emb.image_size, emb.face_fraction) if emb.alignment == "landmarks"
                else align.crop(frame, box, emb.image_size, emb.margin))
        ms = median_ms(lambda emb=emb, face=face: emb.embed(face[None]), args.runs)
        ms8 = median_ms(lambda emb=emb, face=face: emb.embed(np.repeat(face[None], 8, 0)), args.runs) / 8
        print(f"{label:<44}{ms:>11.1f}{tf_ms:>10.1f}{tf_ms / ms:>9.2f}x"
              f"   (batch 8: {ms8:.1f} ms/face)")

    # The seed's workflow is FaceNet + SVM: the memory comparison uses a FaceNet gallery on both sides.
    pipeline = load_pipeline(embedder="facenet_dynamic.tflite", threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        gallery, _ = train(pipeline, faces / "train", "svm")
        gpath = Path(tmp) / "g.npz"
        gallery.save(gpath)
        emb1 = pipeline.embedder.embed(pipeline.align(frame, box, marks)[None])
        for kind in ("centroid", "svm"):
            clf = Classifier(gallery, kind, gallery.meta["threshold"])
            print(f"{f'classify one face ({kind}, 5 people)':<44}"
                  f"{median_ms(lambda clf=clf: clf.predict(emb1), args.runs):>11.3f}")

        ours_mb, ours_s = peak_rss_mb([sys.executable, "-m", "facepi", "classify", str(faces / "val"), str(gpath)])
        default_gallery, _ = train(load_pipeline(threads=args.threads), faces / "train")
        dpath = Path(tmp) / "default.npz"
        default_gallery.save(dpath)
        dflt_mb, dflt_s = peak_rss_mb([sys.executable, "-m", "facepi", "classify", str(faces / "val"), str(dpath)])
        seed_mb, seed_s = peak_rss_mb([sys.executable, __file__, "--seed-classify", str(gpath), str(faces / "val")])
    print()
    print(f"peak RSS, classify 25 val photos: facepi {ours_mb:.0f} MB ({ours_s:.1f} s wall), "
          f"seed-style TensorFlow {seed_mb:.0f} MB ({seed_s:.1f} s wall): {seed_mb / ours_mb:.1f}x less memory")
    print(f"  (facepi classify with the default model, MobileFaceNet + centroid: {dflt_mb:.0f} MB, {dflt_s:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
