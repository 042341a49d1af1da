"""Which embedding model says "unknown" best? Open-set comparison on in-the-wild photos.

    .venv/bin/python bench/compare_models.py [DATA_DIR] [--seeds 0,1,2]

DATA_DIR defaults to ../shared/data/celeba-dev (research-only data: read in place,
never copied). Faces are detected once; each model and alignment mode then
aligns and embeds them. Per seed, half of the identities are enrolled with 5
photos each (their other photos are probes) and the other half are strangers.
Printed: closed-set top-1, TAR at FAR 1 % and 0.1 % with the threshold that
achieves FAR 1 %, ms per face (this machine, 2 threads) and size; then the closest
identity pairs, to spot label noise (one identity under two names would set the
threshold by itself).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facepi.identity.classify import unit_centroids  # noqa: E402
from facepi.measure.evaluate import evaluate, split_people  # noqa: E402
from facepi.vision import align, runtime  # noqa: E402
from facepi.vision.detect import Detector  # noqa: E402
from facepi.vision.embed import Embedder  # noqa: E402
from facepi.vision.faces import DETECT_PIXELS  # noqa: E402
from facepi.vision.images import people_folders, read_rgb, shrink  # noqa: E402
from facepi.vision.photos import Embedded  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data", nargs="?", type=Path, default=ROOT.parent / "shared" / "data" / "celeba-dev")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default="")
    args = ap.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: not found (the development photos live outside the repository)")
    manifest = runtime.load_manifest()
    names = args.models.split(",") if args.models else [
        n for n, e in manifest["models"].items() if e.get("kind") == "embedder" and (runtime.models_dir() / n).exists()]
    det = Detector()
    faces: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]] = {}
    t = time.perf_counter()
    for person, photos in people_folders(args.data).items():
        for p in photos:
            rgb, _ = shrink(read_rgb(p), DETECT_PIXELS)
            boxes, points = det.detect(rgb)
            if len(boxes) == 0:
                faces.setdefault(person, []).append(None)
                continue
            i = align.central_face(boxes, rgb.shape)
            faces.setdefault(person, []).append((rgb, boxes[i], points[i]))
    n_photos = sum(len(v) for v in faces.values())
    print(f"{args.data}: {len(faces)} identities, {n_photos} photos, detected in {time.perf_counter() - t:.0f} s")
    print(f"{'model':<30}{'align':<11}{'top-1':>7}{'TAR@1%':>8}{'TAR@0.1%':>9}{'thr@1%':>8}"
          f"{'dflt FAR':>9}{'ms/face':>8}{'MB':>6}")
    centroids_by_model = {}
    for name in names:
        emb = Embedder(file=name)
        for mode in ("crop", "landmarks"):
            people = {}
            for person, items in faces.items():
                out = []
                for item in items:
                    if item is None:
                        out.append((Path(person), None))
                        continue
                    rgb, box, pts = item
                    crop = (align.warp(rgb, pts, emb.image_size, emb.face_fraction) if mode == "landmarks"
                            else align.crop(rgb, box, emb.image_size, emb.margin or 32))
                    out.append((Path(person), emb.embed(crop[None])[0]))
                people[person] = out
            rows = []
            for seed in [int(s) for s in args.seeds.split(",")]:
                k, s = split_people(list(people), seed)
                rows.append(evaluate(Embedded({p: people[p] for p in k}), Embedded({p: people[p] for p in s}),
                                     5, emb.default_threshold))

            def med(f, rows=rows) -> float:
                return statistics.median(f(r) for r in rows)

            x = np.zeros((1, emb.image_size, emb.image_size, 3), np.uint8)
            emb.embed(x)
            ts = []
            for _ in range(30):
                t0 = time.perf_counter()
                emb.embed(x)
                ts.append((time.perf_counter() - t0) * 1000)
            size = emb.model.spec.entry["size"] / 1e6
            print(f"{name:<30}{mode:<11}{med(lambda r: r['top1']):>7.3f}"
                  f"{med(lambda r: r['at_far']['0.01']['tar']):>8.3f}"
                  f"{med(lambda r: r['at_far']['0.001']['tar']):>9.3f}"
                  f"{med(lambda r: r['at_far']['0.01']['threshold']):>8.3f}"
                  f"{med(lambda r: r.get('default_threshold', {}).get('far', float('nan'))):>9.4f}"
                  f"{statistics.median(ts):>8.1f}{size:>6.1f}")
            if mode == emb.alignment:
                all_e = [(p, e) for p, items in people.items() for _, e in items if e is not None]
                labels = sorted(people)
                idx = np.array([labels.index(p) for p, _ in all_e])
                centroids_by_model[name] = (labels, unit_centroids(np.stack([e for _, e in all_e]), idx,
                                                                    len(labels)))
    print("\nclosest identity pairs (centroid cosine distance), per model, to check for label noise:")
    for name, (labels, c) in centroids_by_model.items():
        d = 1 - c @ c.T
        np.fill_diagonal(d, np.inf)
        iu = np.dstack(np.unravel_index(np.argsort(d, axis=None)[:10:2], d.shape))[0]
        print(f"  {name}: " + ", ".join(f"{labels[i]}~{labels[j]} {d[i, j]:.3f}" for i, j in iu))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
