""""That wasn't X" on look-alike strangers: do their later photos stop being named X, and does X keep his?

    .venv/bin/python bench/correction.py [--data DIR] [--seeds 0,1,2] [--households 200]

DATA defaults to ../shared/data/celeba-dev (read in place, never copied). Per seed,
``--households`` galleries of 3-5 people, each enrolled from 4-8 of their photos
(``facepi.identity.gallery.Gallery`` + ``facepi.identity.enrol.recalibrate``, the centroid classifier at
the gallery's own threshold); their other photos are held out as X's probes. Every
identity outside a household is a stranger to it.

A look-alike pair is (stranger s, member X) where at least 2 of s's photos are named X.
s's photos are put in a seeded order; the first one named X is the one the household
marks "that wasn't X" (one correction, one photo, on a copy of the gallery); the
*later* photos of s are the test set. Counted over all pairs, before and after:

- later photos of s named X (goal: they stop being named X), and "clear": pairs where
  none of them is named X any more,
- later photos of s named as another member (the correction must not push them there),
- X's held-out photos named X (goal: >= 95 % of the before hit rate kept).

Rules compared, each from the same one correction:

- "tighten": the accept distance alone (``classify.person_thresholds``): the evidence face
  goes into ``gallery.against`` and ``recalibrate`` gives X an accept distance just short
  of it;
- "negative": the evidence face alone as a negative prototype (computed here): a face
  nearer to it than to X's centroid is not X; X's accept distance stays the gallery's;
- "facepi": both, as ``classify.Classifier`` applies a correction (``family.correct``).
  The tightened distance alone stopped about half of a look-alike's later photos (those
  nearer to X than the corrected one still passed); with the evidence as a negative
  prototype too, about 93 %.

Embeddings come from the cache bench/learning.py keeps (~/.cache/facepi/bench/).
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from learning import DEFAULT_DATA, DevSet, load_dev  # noqa: E402

from facepi.identity import classify  # noqa: E402
from facepi.identity.enrol import recalibrate  # noqa: E402
from facepi.identity.family import CORRECTION_MAX_LOSS  # noqa: E402
from facepi.identity.gallery import Gallery  # noqa: E402
from facepi.vision import runtime  # noqa: E402

ENROLLED = (4, 8)  # photos enrolled per member
MIN_PHOTOS = ENROLLED[1] + 1  # members keep at least one held-out probe
RULES = ("tighten", "negative", "facepi")


@dataclass
class Tally:
    """Counts summed over a seed's look-alike pairs, for one rule."""

    pairs: int = 0
    clear: int = 0  # pairs with none of the later photos named X after the correction
    later: int = 0  # later photos of the strangers (the test set)
    x_before: int = 0  # ... named X before the correction
    x_after: int = 0  # ... and after
    other_before: int = 0  # ... named as another member before
    other_after: int = 0  # ... and after
    probes: int = 0  # X's held-out photos (counted once per pair)
    hit_before: int = 0  # ... named X before
    hit_after: int = 0  # ... and after
    refused: int = 0  # corrections the guard refused (they would cost X > 10 % of X's own enrolled photos)

    def add(self, other: Tally) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def stopped(self) -> float:
        """Share of the later photos named X before that are no longer named X."""
        return 1.0 - self.x_after / max(self.x_before, 1)

    @property
    def kept(self) -> float:
        """X's hit rate after, as a share of before."""
        return self.hit_after / max(self.hit_before, 1)


def household(dev: DevSet, rng: random.Random) -> dict[int, np.ndarray]:
    """Members (identity -> enrolled photo rows), 3-5 of them, 4-8 photos each."""
    eligible = [i for i in range(len(dev.people)) if len(dev.photos_of(i)) >= MIN_PHOTOS]
    members = {}
    for i in rng.sample(eligible, rng.randint(3, 5)):
        rows = list(dev.photos_of(i))
        rng.shuffle(rows)
        members[i] = np.asarray(rows[:rng.randint(*ENROLLED)])
    return members


def build(dev: DevSet, members: dict[int, np.ndarray]) -> Gallery:
    """The household's gallery, calibrated as facepi calibrates it (setup: no health checks)."""
    model = str(runtime.model_spec(dev.embedder).entry["model"])
    g = Gallery(model, dev.embeddings.shape[1], meta={
        "classifier": "centroid", "target_far": classify.DEFAULT_TARGET_FAR, "embedder": dev.embedder})
    for i, rows in members.items():
        g.add(dev.people[i], dev.embeddings[rows], [f"{dev.people[i]}/{r}" for r in rows])
    recalibrate(g)
    return g


def names(clf: classify.Classifier, x: np.ndarray) -> np.ndarray:
    return np.array([p.name for p in clf.predict(x)], dtype=object)


def corrected(gallery: Gallery, name: str, evidence: np.ndarray, tighten_only: bool = False) -> classify.Classifier:
    """facepi's "that wasn't NAME" on a copy of the gallery, as ``family.correct`` mutates it."""
    g = copy.copy(gallery)
    g.meta = copy.deepcopy(gallery.meta)
    g.against = [*gallery.against, (name, evidence / max(float(np.linalg.norm(evidence)), 1e-12), "bench", None)]
    recalibrate(g)
    clf = classify.Classifier(g, "centroid", g.meta["threshold"])
    if tighten_only:
        clf.evidence = {}  # the accept distance alone, without the evidence as a negative prototype
    return clf


def negative(before: np.ndarray, x: np.ndarray, name: str, centroid: np.ndarray,
             evidence: np.ndarray) -> np.ndarray:
    """The alternative: faces named ``name`` that are nearer to the evidence than to the centroid become
    unknown. Nothing else changes, so X's accept distance is never looser (nor tighter) than the rule."""
    out = before.copy()
    nearer = (1.0 - x @ evidence) < (1.0 - x @ centroid)
    out[(before == name) & nearer] = classify.UNKNOWN
    return out


def run_seed(dev: DevSet, seed: int, n_households: int) -> dict[str, Tally]:
    rng = random.Random(seed)
    totals = {r: Tally() for r in RULES}
    for _ in range(n_households):
        members = household(dev, rng)
        g = build(dev, members)
        clf = classify.Classifier(g, "centroid", g.meta["threshold"])
        named = names(clf, dev.embeddings)  # every dev photo, before any correction
        own = {p: classify.own_photos_named(g, p)[0] for p in g.people}
        member_names = {dev.people[i] for i in members}
        for s in range(len(dev.people)):
            if s in members:
                continue
            rows = list(dev.photos_of(s))
            rng.shuffle(rows)
            for x_id in members:
                x = dev.people[x_id]
                hits = [k for k, r in enumerate(rows) if named[r] == x]
                if len(hits) < 2:
                    continue
                evidence = dev.embeddings[rows[hits[0]]]
                later = np.asarray(rows[hits[0] + 1:])
                probes = np.setdiff1d(dev.photos_of(x_id), members[x_id])
                test = np.concatenate([later, probes])
                before = named[test]
                full = corrected(g, x, evidence)
                kept, n_own = classify.own_photos_named(full.gallery, x)
                refused = kept < own[x] - CORRECTION_MAX_LOSS * n_own  # family.correct's guard
                after = {"tighten": names(corrected(g, x, evidence, tighten_only=True), dev.embeddings[test]),
                         "facepi": before if refused else names(full, dev.embeddings[test]),
                         "negative": negative(before, dev.embeddings[test], x,
                                              clf.centroids[g.people.index(x)], evidence)}
                others = member_names - {x}
                for rule, now in after.items():
                    b, a, n = before[:len(later)], now[:len(later)], len(later)
                    totals[rule].add(Tally(
                        1, int(not np.any(a == x)), n, int(np.sum(b == x)), int(np.sum(a == x)),
                        sum(v in others for v in b), sum(v in others for v in a),
                        len(probes), int(np.sum(before[n:] == x)), int(np.sum(now[n:] == x)),
                        int(rule == "facepi" and refused)))
    return totals


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--households", type=int, default=200)
    args = ap.parse_args()
    dev = load_dev(args.data)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{dev.embedder} on {args.data.name}: {len(dev.people)} identities, {len(dev.owner)} photos; "
          f"{args.households} households of 3-5 people, {ENROLLED[0]}-{ENROLLED[1]} photos each; "
          f"one correction per look-alike pair")
    head = (f"{'seed':>6} {'rule':9} {'pairs':>5} {'clear':>5} {'later':>5} {'named X':>13} {'stopped':>7} "
            f"{'other member':>12} {'probes':>6} {'X hits':>11} {'kept':>6}")
    print(head)
    print("-" * len(head))
    runs = {s: run_seed(dev, s, args.households) for s in seeds}

    def row(label: str, rule: str, t: dict[str, float]) -> None:
        print(f"{label:>6} {rule:9} {t['pairs']:>5.0f} {t['clear']:>5.0f} {t['later']:>5.0f} "
              f"{t['x_before']:>6.0f} ->{t['x_after']:>4.0f} {t['stopped']:>7.1%} "
              f"{t['other_before']:>5.0f} ->{t['other_after']:>4.0f} {t['probes']:>6.0f} "
              f"{t['hit_before']:>5.0f} ->{t['hit_after']:>4.0f} {t['kept']:>6.1%}")

    keys = [f.name for f in fields(Tally)] + ["stopped", "kept"]
    medians = {}
    for rule in RULES:
        for s in seeds:
            row(str(s), rule, {k: getattr(runs[s][rule], k) for k in keys})
        medians[rule] = {k: statistics.median(getattr(runs[s][rule], k) for s in seeds) for k in keys}
        row("median", rule, medians[rule])
    print()
    for rule in RULES:
        m = medians[rule]
        print(f"{rule}: {m['clear']:.0f} of {m['pairs']:.0f} look-alike pairs clear after; "
              f"later photos named X {m['x_before']:.0f} -> {m['x_after']:.0f} "
              f"({m['stopped']:.1%} stopped); named as another member {m['other_before']:.0f} -> "
              f"{m['other_after']:.0f}; X's own photos kept {m['kept']:.1%} of their hits "
              f"(goal >= 95 %: {'met' if m['kept'] >= 0.95 else 'NOT met'})"
              + (f"; {m['refused']:.0f} corrections refused by the guard" if rule == "facepi" else "")
              + f" [median of seeds {seeds}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
