"""Look-alikes at the door: is a stranger ever announced as the member they resemble, is a visit's name
ever taken back, and how long does a member wait for their name?

    .venv/bin/python bench/lookalikes.py [--data DIR] [--seeds 0,1,2] [--households 60] [--confirm 0,0.3,0.5,0.8]
                                         [--before a34bfb7] [--hold 3]

DATA defaults to ../shared/data/celeba-dev (read in place, never copied). Per seed, ``--households``
galleries of 3-5 people, each enrolled from 5 of their photos (the centroid classifier at the gallery's
own threshold, as facepi calibrates it). Per member, the ``--nearest`` (3) identities outside the
household whose photos are nearest to the member's centroid (median distance) are the look-alikes; a
look-alike is "mostly outside" when fewer than half of their photos are named as the member one by one.

Every look-alike visits once and every member visits once, each with up to 6 of their photos in a row
(random order; a member's are photos not enrolled), each photo held ``--hold`` frames at 10 fps (a
door's changing pose, with in-the-wild photos: a harsh test), one face in one spot, then nobody for 3 s.
Every frame goes through the real ``facepi.door.track.Tracker`` (update, wants_embedding,
add_embedding with the real classifier, announce), as the daemon drives it. Rules compared in one run:

- ``before``: the tracker of ``--before`` (git show REV:facepi/door/track.py; default a34bfb7, the rule
  issue 24 replaced: the vote of the first frames named the visit, a later different vote was announced
  as a second event);
- ``after c``: this checkout's tracker with ``confirm_seconds = c`` (the default marked *).

Printed per rule (summed over seeds): look-alike visits announced as their member (mostly outside /
mostly inside), visits whose name changed after it went out (a second name, a name then unknown, or a
correction), member visits named (goal >= 95 %), member visits followed by unknown after their name,
member visits that said "someone at the door" (unknown) before the name, and the time from first
sighting to the name, p50/p95 (goal p95 <= 1.5 s).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from correction import build  # noqa: E402
from learning import DEFAULT_DATA, DevSet, load_dev  # noqa: E402

from facepi.config import Config  # noqa: E402
from facepi.door import track as current  # noqa: E402
from facepi.identity import classify  # noqa: E402

FPS = 10.0
ENROLLED = 5
PHOTOS_PER_VISIT = 6
AWAY = 3.0  # seconds of empty frames after a visit: the track and the visit end
W = 120.0
BOX = np.array([[260, 100, 260 + W, 100 + W * 1.2, 0.999]])
LANDMARKS = np.array([[[260 + 0.34 * W, 160], [260 + 0.66 * W, 160], [260 + 0.5 * W, 185], [260 + 0.37 * W, 210],
                       [260 + 0.63 * W, 210]]])


def old_tracker_module(rev: str):
    """facepi/door/track.py as it was at ``rev``, imported beside today's."""
    text = subprocess.run(["git", "show", f"{rev}:facepi/door/track.py"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="facepi-before-")) / "track_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("track_before", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["track_before"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def tracker(module, confirm: float | None, threshold: float):
    r = Config().recognition
    kw = dict(iou=r.iou, visit_gap=r.visit_gap, vote_frames=r.vote_frames, reidentify_seconds=r.reidentify_seconds,
              track_gap=r.track_gap, presence_hold=r.presence_hold, unknown_min_frames=r.unknown_min_frames)
    if confirm is not None:
        kw["confirm_seconds"], kw["threshold"] = confirm, threshold
    return module.Tracker(**kw)


def visit(module, confirm: float | None, embeddings: np.ndarray, hold: int,
          clf: classify.Classifier) -> list[tuple[str, str, float]]:
    """One visit, photo after photo: what was announced, as (kind, name, seconds since first sighting)."""
    tr = tracker(module, confirm, clf.threshold)
    said = []
    frames = [e for e in embeddings for _ in range(hold)]
    empty = (np.zeros((0, 5)), np.zeros((0, 5, 2)))
    for k in range(len(frames) + int(AWAY * FPS)):
        t = k / FPS
        boxes, lms = (BOX, LANDMARKS) if k < len(frames) else empty
        seen = tr.update(boxes, lms, t, (640, 480))
        for track in getattr(tr, "ended", []):  # left view while a name was being confirmed: settled now
            if out := tr.announce(track, track.last_t, left=True):
                said.append((out.kind, out.name, t))
        for track in seen:
            if tr.wants_embedding(track, t):
                track = tr.add_embedding(track, frames[k], t, lambda e: clf.predict(e[None])[0])
            out = tr.announce(track, t)
            if out is True:  # the tracker before issue 24: its decision is what was said
                name = track.decision.name
                said.append(("unknown" if name == classify.UNKNOWN else "recognized", name, t))
            elif out:
                said.append((out.kind, out.name, t))
    return said


@dataclass
class Tally:
    lookalikes_out: int = 0  # look-alike visits, mostly outside the threshold
    out_named: int = 0  # ... announced as their member
    lookalikes_in: int = 0
    in_named: int = 0
    changed: int = 0  # visits whose name changed after it went out
    members: int = 0
    named: int = 0  # member visits announced by their name
    wrong: int = 0  # member visits announced as another member
    unknown_after: int = 0  # member visits with unknown after their name
    unknown_before: int = 0  # member visits that said unknown before their name
    times: list[float] = field(default_factory=list)


def changed(said: list[tuple[str, str, float]]) -> bool:
    names = [n for k, n, _ in said]
    first = next((i for i, n in enumerate(names) if n != classify.UNKNOWN), None)
    return first is not None and (any(n != names[first] for n in names[first + 1:]) or
                                  any(k == "correction" for k, _, _ in said))


def run(dev: DevSet, seed: int, households: int, nearest: int, hold: int,
        rules: dict[str, tuple[object, float | None]]) -> dict[str, Tally]:
    rng = random.Random(seed)
    out = {label: Tally() for label in rules}
    eligible = [i for i in range(len(dev.people)) if len(dev.photos_of(i)) >= ENROLLED + 3]
    for _ in range(households):
        members: dict[int, np.ndarray] = {}
        held: dict[int, list[int]] = {}
        for i in rng.sample(eligible, rng.randint(3, 5)):
            rows = list(dev.photos_of(i))
            rng.shuffle(rows)
            members[i], held[i] = np.asarray(rows[:ENROLLED]), rows[ENROLLED:ENROLLED + PHOTOS_PER_VISIT]
        g = build(dev, members)
        clf = classify.Classifier(g, "centroid", g.meta["threshold"])
        named = np.array([p.name for p in clf.predict(dev.embeddings)], dtype=object)
        visits: list[tuple[str, int, list[int], bool]] = []  # (member's name, who, photos, mostly inside)
        for x in members:
            name = dev.people[x]
            centroid = clf.centroids[g.people.index(name)]
            d = 1.0 - dev.embeddings @ centroid
            strangers = [s for s in range(len(dev.people)) if s not in members]
            strangers.sort(key=lambda s: float(np.median(d[dev.photos_of(s)])))
            for s in strangers[:nearest]:
                rows = list(dev.photos_of(s))
                rng.shuffle(rows)
                rows = rows[:PHOTOS_PER_VISIT]
                visits.append((name, s, rows, float(np.mean(named[rows] == name)) >= 0.5))
            visits.append((name, x, held[x], True))
        for name, who, rows, inside in visits:
            member = dev.people[who] == name
            for label, (module, confirm) in rules.items():
                said = visit(module, confirm, dev.embeddings[rows], hold, clf)
                t = out[label]
                names = [n for _, n, _ in said]
                t.changed += changed(said)
                if member:
                    t.members += 1
                    t.named += name in names
                    t.wrong += any(n not in (name, classify.UNKNOWN) for n in names)
                    if name in names:
                        k = names.index(name)
                        t.unknown_after += classify.UNKNOWN in names[k + 1:]
                        t.unknown_before += classify.UNKNOWN in names[:k]
                        t.times.append(said[k][2])
                elif inside:
                    t.lookalikes_in += 1
                    t.in_named += name in names
                else:
                    t.lookalikes_out += 1
                    t.out_named += name in names
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--households", type=int, default=60)
    ap.add_argument("--nearest", type=int, default=3, help="look-alikes per member")
    ap.add_argument("--hold", type=int, default=3, help="frames each photo is held (10 fps)")
    ap.add_argument("--confirm", default="0,0.3,0.5,0.8", help="confirm_seconds values of the new rule")
    ap.add_argument("--before", default="a34bfb7", help="git revision of the tracker before (empty: none)")
    args = ap.parse_args()
    dev = load_dev(args.data)
    default = Config().recognition.confirm_seconds
    rules: dict[str, tuple[object, float | None]] = {}
    if args.before:
        rules[f"before ({args.before})"] = (old_tracker_module(args.before), None)
    for c in (float(x) for x in args.confirm.split(",")):
        rules[f"after {c:g}" + (" *" if c == default else "")] = (current, c)
    seeds = [int(s) for s in args.seeds.split(",")]
    totals = {label: Tally() for label in rules}
    for s in seeds:
        for label, t in run(dev, s, args.households, args.nearest, args.hold, rules).items():
            for k, v in vars(t).items():
                setattr(totals[label], k, getattr(totals[label], k) + v)
    print(f"{dev.embedder} on {args.data.name}: {args.households} households x seeds {seeds}, {args.nearest} "
          f"look-alikes per member, up to {PHOTOS_PER_VISIT} photos per visit, each held {args.hold} frames at "
          f"{FPS:g} fps")
    head = (f"{'rule':18} {'look-alikes named (mostly out)':>30} {'(mostly in)':>13} {'name changed':>12} "
            f"{'members named':>16} {'wrong':>5} {'unk. after':>10} {'unk. before':>11} {'to name p50/p95 s':>18}")
    print(head)
    print("-" * len(head))
    for label, t in totals.items():
        p50, p95 = (np.percentile(t.times, [50, 95]) if t.times else (float("nan"),) * 2)
        print(f"{label:18} {t.out_named:>21} of {t.lookalikes_out:<6} {t.in_named:>5} of {t.lookalikes_in:<5} "
              f"{t.changed:>12} {t.named:>6} of {t.members:<4} {t.named / max(t.members, 1):>4.0%} {t.wrong:>5} "
              f"{t.unknown_after:>10} {t.unknown_before:>11} {p50:>9.2f}/{p95:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
