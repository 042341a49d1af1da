"""Template drift by namings (issue 28, item 6): before and after "a naming's faces must agree", one run.

    .venv/bin/python bench/drift.py [--data DIR] [--members 10] [--rounds 5] [--alpha 0.6] [--agree-far 0.01]

The attack: a look-alike attacker comes to the door with a picture of a member (here a morph: the member's
aligned face blended with the attacker's, ``--alpha`` of the member) held up beside their own face, in
one track. The dashboard shows the member's face, the household names the visitor as the member; the
attacker's own faces ride along. Repeated ``--rounds`` times, the member's template moves toward the
attacker until the attacker's own unseen photos are named as the member.

Data: ../shared/data/celeba-dev (143 identities; read in place), embedded once with facepi's pipeline and
cached by bench/learning.py. ``--members`` identities (with >= 10 photos) are the family, 5 photos each;
every other identity is a stranger. For each member the attacker is the stranger who looks most like
them (median distance of their photos to the member's centroid: an attacker picks their target). The
attacker's photos are split: half to come to the door with (each round, the 3 nearest to the member's
template *as it is then*: the attacker shows their most member-like side), half never shown (unseen).
Each round's visit: 2 morphs + 3 of the attacker's faces, named as the member through
``facepi.identity.enrol.enroll_crops`` (the checks of an MQTT naming), on a copy of the gallery per rule:

- before: ``one_person=False`` (every face checked against the member alone: the rule up to a34bfb7);
- after: ``one_person=True`` (the visit's faces must agree with each other first).

Printed per rule: namings accepted, the attacker's unseen photos named as the member (before the attack
-> after it), other strangers' photos named as the member (before -> after), and the cost of the rule:
genuine visits (3 unenrolled photos of a member, named as them) refused. In-the-wild photos of one person
across years are far less alike than the crops of one door visit, so this cost is an upper bound.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning import DEFAULT_DATA, DevSet, load_dev  # noqa: E402

from facepi.identity import classify, enrol  # noqa: E402
from facepi.identity.gallery import Gallery  # noqa: E402


def named_as(g: Gallery, x: np.ndarray, member: str) -> int:
    c = classify.Classifier(g, "centroid", float(g.meta["threshold"]))
    return sum(p.name == member for p in c.predict(x))


def attack(dev: DevSet, embedder: Any, members: int = 10, rounds: int = 5, alpha: float = 0.6, own_faces: int = 3,
           rules: tuple[str, ...] = ("before", "after")) -> dict[str, dict[str, Any]]:
    """The attack on every member, once per rule; totals per rule (see the module's docstring)."""
    rich = [i for i in range(len(dev.people)) if len(dev.photos_of(i)) >= 10]
    family = rich[:members]
    g0 = Gallery(embedder.model_id, embedder.dim, meta={"classifier": "centroid", "target_far": 0.01,
                                                        "embedder": dev.embedder, "person_keys": {}})
    for i in family:
        rows = dev.photos_of(i)[:5]
        g0.add(dev.people[i], dev.embeddings[rows], [f"{dev.people[i]}/{r}" for r in rows])
    enrol.recalibrate(g0)
    strangers = [i for i in range(len(dev.people)) if i not in family and len(dev.photos_of(i)) >= 6]
    totals: dict[str, dict[str, Any]] = {
        rule: {"accepted": 0, "own_added": 0, "unseen": [0, 0], "others": [0, 0], "genuine_refused": 0,
               "namings": len(family) * rounds, "n_unseen": 0, "n_others": 0} for rule in rules}
    for m in family:
        member = dev.people[m]
        cent = g0.embeddings[g0.labels == g0.people.index(member)].mean(axis=0)
        cent /= np.linalg.norm(cent)
        a = min(strangers, key=lambda s: float(np.median(1.0 - dev.embeddings[dev.photos_of(s)] @ cent)))
        rows_a = dev.photos_of(a)
        pool, unseen = rows_a[:len(rows_a) // 2], rows_a[len(rows_a) // 2:]
        others = np.concatenate([dev.photos_of(s) for s in strangers if s != a])
        spare = dev.photos_of(m)[5:]  # the member's photos not enrolled: morph sources, genuine visits
        for rule in rules:
            g = copy.deepcopy(g0)
            t = totals[rule]
            t["n_unseen"] += len(unseen)
            t["n_others"] += len(others)
            t["unseen"][0] += named_as(g, dev.embeddings[unseen], member)
            t["others"][0] += named_as(g, dev.embeddings[others], member)
            gg = copy.deepcopy(g)  # the member at the door, named as themself each round: 3 other photos each
            for k in range(rounds):
                genuine = [spare[(3 * k + j) % len(spare)] for j in range(3)]
                report = enrol.enroll_crops(gg, member, dev.embeddings[genuine], dev.crops[genuine],
                                            [f"door-genuine-{k}-{r}" for r in genuine], one_person=rule == "after")
                t["genuine_refused"] += report.added == 0
            for k in range(rounds):
                c = g.embeddings[g.labels == g.people.index(member)].mean(axis=0)
                c /= np.linalg.norm(c)
                nearest = pool[np.argsort(1.0 - dev.embeddings[pool] @ c)]
                src = [spare[(2 * k + j) % len(spare)] for j in range(2)]
                blends = np.stack([np.clip(alpha * dev.crops[s].astype(np.float32) +
                                           (1 - alpha) * dev.crops[nearest[j]].astype(np.float32), 0, 255)
                                   .astype(np.uint8) for j, s in enumerate(src)])
                morphs = embedder.embed(blends)
                for n_own in range(own_faces, -1, -1):  # refused: the attacker comes again with fewer own faces
                    own = nearest[:n_own]
                    embs = np.concatenate([morphs, dev.embeddings[own]])
                    crops = np.concatenate([blends, dev.crops[own]])
                    report = enrol.enroll_crops(g, member, embs, crops, [f"door-r{k}-morph{j}" for j in range(2)] +
                                                [f"door-r{k}-own{j}" for j in range(n_own)], one_person=rule == "after")
                    if report.added:
                        t["accepted"] += 1
                        t["own_added"] += n_own
                        break
            t["unseen"][1] += named_as(g, dev.embeddings[unseen], member)
            t["others"][1] += named_as(g, dev.embeddings[others], member)
    return totals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=0.6, help="share of the member in each morph")
    ap.add_argument("--own", type=int, default=3, help="the attacker's own faces in a visit (then fewer if refused)")
    ap.add_argument("--agree-far", type=float, default=None, help="override enrol.AGREE_FAR")
    ap.add_argument("--drift", type=float, default=None, help="override enrol.DRIFT")
    ap.add_argument("--learn", type=float, default=None, help="override enrol.LEARN")
    args = ap.parse_args(argv)
    for flag, attr in ((args.agree_far, "AGREE_FAR"), (args.drift, "DRIFT"), (args.learn, "LEARN")):
        if flag is not None:
            setattr(enrol, attr, flag)
    dev = load_dev(args.data)
    from facepi.vision.photos import load_pipeline

    embedder = load_pipeline(embedder=dev.embedder).embedder
    totals = attack(dev, embedder, args.members, args.rounds, args.alpha, args.own)
    print(f"{args.members} members x {args.rounds} namings of a visit (2 morphs at {args.alpha:.0%} member + "
          f"{args.own} of the attacker's own faces); agree FAR {enrol.AGREE_FAR}, drift {enrol.DRIFT}, "
          f"learn {enrol.LEARN}")
    for rule, t in totals.items():
        print(f"{rule:>6}: namings accepted {t['accepted']}/{t['namings']} ({t['own_added']} of the attacker's own "
              f"faces enrolled); attacker's unseen photos named as the member {t['unseen'][0]}/{t['n_unseen']} -> "
              f"{t['unseen'][1]}/{t['n_unseen']}; other strangers' photos {t['others'][0]}/{t['n_others']} -> "
              f"{t['others'][1]}/{t['n_others']}; genuine visits refused {t['genuine_refused']}/{t['namings']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
