"""Can a stranger be taught as family? Five crops of another person named as an existing member.

    .venv/bin/python bench/impostor.py [--data DIR] [--galleries 12] [--seed 0]

DATA defaults to ../shared/data/celeba-dev (read in place, never copied). Each of
``--galleries`` households has 3-5 people, each enrolled from 3-8 of their photos
(seeded). Then, on a copy of the gallery each time:

- impostor: five aligned crops of an identity *not* in the gallery are enrolled under
  one member's name through ``facepi.identity.enrol.enroll_crops`` without force, the path
  a door visitor's naming takes (``name_visitor``, MQTT, Home Assistant);
- genuine: five more photos of that member himself, the same way, so that a fix
  which refuses everything shows up.

Accepted = something was added and no problem was raised. Also printed: the gallery's
threshold ("rule") and the distance of the five faces' mean from the member's existing
enrolment, for the stranger ("d imp") and the member ("d gen"). Goal: impostors 0 of 12,
genuine additions (nearly) all accepted. Embeddings and crops come from the
cache that bench/learning.py keeps (~/.cache/facepi/bench/).
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from learning import DEFAULT_DATA, DevSet, load_dev  # noqa: E402

from facepi.identity import classify  # noqa: E402
from facepi.identity.enrol import enroll_crops  # noqa: E402
from facepi.identity.gallery import Gallery  # noqa: E402
from facepi.vision import runtime  # noqa: E402

ADDED = 5  # crops named at once: a visitor's best five


def household(dev: DevSet, rng: random.Random) -> tuple[dict[str, np.ndarray], str, np.ndarray, np.ndarray]:
    """Members (name -> enrolled photo rows), the member named, five more of his photos, five of a stranger."""
    eligible = [i for i in range(len(dev.people)) if len(dev.photos_of(i)) >= 3 + ADDED]
    chosen = rng.sample(eligible, rng.randint(3, 5) + 1)
    stranger, people = chosen[0], chosen[1:]
    target = people[0]
    members = {}
    for i in people:
        rows = list(dev.photos_of(i))
        rng.shuffle(rows)
        n = rng.randint(3, 8)
        if i == target:
            n = min(n, len(rows) - ADDED)
            more = np.asarray(rows[n:n + ADDED])
        members[dev.people[i]] = np.asarray(rows[:n])
    strange = list(dev.photos_of(stranger))
    rng.shuffle(strange)
    return members, dev.people[target], more, np.asarray(strange[:ADDED])


def name_as(gallery: Gallery, dev: DevSet, name: str, rows: np.ndarray, tag: str) -> tuple[bool, list[str]]:
    """``rows`` enrolled as ``name`` on a copy of the gallery without force: accepted, and the problems."""
    g = copy.deepcopy(gallery)
    labels = [f"{tag}-{k}" for k in range(len(rows))]
    report = enroll_crops(g, name, dev.embeddings[rows], dev.crops[rows], labels, force=False)
    return report.added > 0 and not report.problems, report.problems


def to_member(gallery: Gallery, name: str, x: np.ndarray) -> float:
    """Distance of the new faces' mean from the member's *existing* enrolment (centroid): what a check
    that leaves the newcomers out of the mean sees; compare with the gallery's threshold ("rule")."""
    c = gallery.embeddings[gallery.labels == gallery.people.index(name)].mean(axis=0)
    m = x.mean(axis=0)
    return 1.0 - float(c @ m) / float(np.linalg.norm(c) * np.linalg.norm(m))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--galleries", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    dev = load_dev(args.data)
    entry = runtime.model_spec(dev.embedder).entry
    rng = random.Random(args.seed)
    print(f"{dev.embedder} on {args.data.name}: {args.galleries} galleries of 3-5 people, 3-8 photos each; "
          f"{ADDED} crops named as a member (seed {args.seed})")
    head = (f"{'#':>2} {'people':>6} {'photos':>12} {'member':>8} {'rule':>6} {'d imp':>6} {'d gen':>6} "
            f"{'impostor':>9} {'genuine':>8}  why refused")
    print(head)
    print("-" * len(head))
    impostors = genuine = 0
    for h in range(args.galleries):
        members, target, more, strange = household(dev, rng)
        gallery = Gallery(str(entry["model"]), dev.embeddings.shape[1], meta={
            "classifier": "centroid", "target_far": classify.DEFAULT_TARGET_FAR, "embedder": dev.embedder})
        for name, rows in members.items():  # the household as it was enrolled (forced: the setup, not the test)
            enroll_crops(gallery, name, dev.embeddings[rows], dev.crops[rows],
                         [f"{name}-{k}" for k in range(len(rows))], force=True)
        d_bad, d_good = (to_member(gallery, target, dev.embeddings[r]) for r in (strange, more))
        bad, why_bad = name_as(gallery, dev, target, strange, "stranger")
        good, why_good = name_as(gallery, dev, target, more, "member")
        impostors += bad
        genuine += good
        why = "; ".join(why_bad[:1] + [f"genuine: {w}" for w in why_good[:1]])
        print(f"{h + 1:>2} {len(members):>6} {','.join(str(len(r)) for r in members.values()):>12} "
              f"{target:>8} {gallery.meta['threshold']:>6.3f} {d_bad:>6.3f} {d_good:>6.3f} "
              f"{'accepted' if bad else 'refused':>9} {'accepted' if good else 'refused':>8}  "
              f"{why[:110]}")
    print(f"\nimpostor crops accepted as a member: {impostors} of {args.galleries}; "
          f"genuine additions accepted: {genuine} of {args.galleries}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
