"""Calibration poisoning on the phone camera: MSU-MFSD's 15 live faces and, told to be live too, n of its
attacks (the lowest-scoring ones above the outlier cut: those drag the threshold furthest without being
refused as outliers). For each n: the threshold that comes out (or the refusal) and how many of the 45
attacks it then accepts. Real models, real frames.

    .venv/bin/python bench/liveness_poison.py [--data DIR]

DATA defaults to ../shared/data/liveness-dev (read in place). Run it with another checkout's interpreter
(its editable install) to measure that checkout's calibration.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facepi.identity import liveness as rules
from facepi.vision.images import read_rgb
from facepi.vision.liveness import LivenessModel
from facepi.vision.photos import load_pipeline

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "liveness-dev")
    args = ap.parse_args()
    model, det = LivenessModel.load(threads=1), load_pipeline(threads=1).detector

    def scores(kind: str) -> list[float]:
        out = []
        for p in sorted((args.data / "msu" / kind).glob("*.jpg")):
            rgb = read_rgb(p)
            boxes, _ = det.detect(rgb)
            out.append(model.score(rgb, boxes[np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))]))
        return out

    live, attacks = scores("live"), scores("attack")
    m, s = rules._robust(rules.log_odds(np.array(live)))
    cand = sorted(a for a in attacks if a >= rules.probability(m - rules.OUTLIER_K * s))
    print(f"MSU: {len(live)} live, {len(attacks)} attacks, {len(cand)} above the outlier cut")
    print("| attacks among the live | threshold | floor | attacks accepted |\n|---|---|---|---|")
    for n in range(0, len(cand) + 1):
        try:
            c = rules.calibrate(live + cand[:n], "msu")
            print(f"| +{n} | {c.threshold:.4f} | {c.floor:.4f} | {sum(a >= c.threshold for a in attacks)}/45 |")
        except rules.CalibrationRefused as e:
            print(f"| +{n} | refused: {str(e)[:70]}... | | 0/45 |")


if __name__ == "__main__":
    main()
