"""5-celebrity accuracy table: closed set and each person held out, per model file and alignment.

    .venv/bin/python bench/accuracy.py [--embedders facenet_dynamic.tflite,facenet_float32.tflite]

Train on train/, classify val/; then leave each person out of training and count
how many of their 5 val photos come back unknown and how many of the other 20 are
still named, at the threshold the gallery calibrates for itself (FAR 1 %).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from facepi_convert import sources  # noqa: E402

from facepi.measure.evaluate import train_val_report
from facepi.vision import runtime  # noqa: E402
from facepi.vision.photos import (
    embed_folder,  # noqa: E402
    load_pipeline,  # noqa: E402
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    present = [n for n, e in runtime.load_manifest()["models"].items()
               if e.get("kind") == "embedder" and (runtime.models_dir() / n).exists()]
    ap.add_argument("--embedders", default=",".join(present))
    ap.add_argument("--modes", default="crop,landmarks")
    args = ap.parse_args()
    faces = sources.celebrity_faces(sources.cache_dir())
    print(f"{'model':<26}{'align':<11}{'clf':<9}{'closed':>8}  held out: unknown/5, others named/20")
    for name in args.embedders.split(","):
        for mode in args.modes.split(","):
            pipe = load_pipeline(embedder=name, mode=mode)
            train, val = embed_folder(pipe, faces / "train"), embed_folder(pipe, faces / "val")
            for kind in ("centroid", "svm"):
                r = train_val_report(train, val, kind, pipe.embedder.operating_points, pipe.embedder.model_id,
                                     default_threshold=pipe.embedder.default_threshold)
                cells = "  ".join(f"{h['person'][:6]} {h['unknown']}/{h['of']} {h['others_named']}/{h['others']}"
                                  for h in r["held_out"])
                ok = all(h["unknown"] >= 4 and h["others_named"] >= 19 for h in r["held_out"])
                print(f"{name:<26}{mode:<11}{kind:<9}{r['closed_set_correct']:>5}/{r['val_photos']}  {cells}"
                      f"  {'ok' if ok else 'MISSES'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
