"""Learning at the door on in-the-wild strangers: are they kept apart, and do re-visits still join?

    .venv/bin/python bench/learning.py [--data DIR] [--seeds 0,1,2] [--stored 10,50] [--targets 0.01,0.05]

DATA defaults to ../shared/data/celeba-dev (143 identities, up to 12 photos each;
research-only: read in place, never copied). Each identity is a stranger who comes
to the door 2-3 times, each visit with *different* photos (1-3 of them, as the
daemon keeps the best few faces of a visit). Strangers arrive one after another
and come back within the next ``--gap`` arrivals, so visits interleave. Every visit
goes through ``Visitors.add_visit`` and the store is pruned as the daemon prunes it
(``max_visitors`` = 10 and 50, ``keep`` = 5 crops per visitor).

Per rule and store size, the median over seeds of:

- visitors formed (ideal: one per stranger),
- merges: visitors holding visits of more than one identity, per 50 strangers,
- re-visits joined: share of 2nd/3rd visits that joined a visitor holding that
  stranger's earlier visit, among those whose earlier visitor was still stored
  (a pruned visitor cannot be joined by any rule).

Rules: "before" is today's fixed distance (the model's 5 %-FAR operating point, the
daemon's split distance); "after" is ``facepi.identity.visitors.JoinRule`` at each target.

Photos are embedded once with facepi's own pipeline and cached (embeddings, aligned
crops and crop quality) in ~/.cache/facepi/bench/ as .npz, so reruns take seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facepi.identity import classify  # noqa: E402
from facepi.identity.visitor_file import Visitors  # noqa: E402
from facepi.identity.visitors import VISIT_FAR, JoinRule, crop_quality  # noqa: E402
from facepi.vision import runtime  # noqa: E402
from facepi.vision.images import people_folders  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "celeba-dev"
CACHE = Path.home() / ".cache" / "facepi" / "bench"
KEEP = 5  # crops per visitor, the daemon's default
FIXED_FAR = 0.05  # today's join distance: the model's 5 %-FAR operating point


@dataclass
class DevSet:
    """Every photo with one face: its identity, embedding, aligned crop and the daemon's crop quality."""

    people: list[str]
    owner: np.ndarray  # (N,) index into people
    embeddings: np.ndarray  # (N, D) float32
    crops: np.ndarray  # (N, S, S, 3) uint8
    quality: np.ndarray  # (N,) float32
    embedder: str

    def photos_of(self, i: int) -> np.ndarray:
        return np.flatnonzero(self.owner == i)


def load_dev(data: Path, embedder: str | None = None, limit: int | None = None) -> DevSet:
    """The dev photos embedded with facepi's pipeline; cached, keyed by the photo list and the model.
    ``limit``: only the first identities (in name order), for a test that must stay short."""
    if not data.is_dir():
        raise SystemExit(f"{data}: not found (the development photos live outside the repository; --data DIR)")
    folders = dict(sorted(people_folders(data).items())[:limit])
    from facepi.vision.photos import load_pipeline

    pipe = load_pipeline(embedder=embedder)
    key = hashlib.sha256()
    key.update(pipe.embedder.model.spec.entry["sha256"].encode())
    key.update(f"{pipe.mode}/{pipe.margin}".encode())
    for person, files in sorted(folders.items()):
        for f in files:
            key.update(f"{person}/{f.name}/{f.stat().st_size}\n".encode())
    path = CACHE / f"{data.name}-{pipe.embedder.file.removesuffix('.tflite')}-{key.hexdigest()[:12]}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            return DevSet([str(p) for p in z["people"]], z["owner"], z["embeddings"], z["crops"], z["quality"],
                          pipe.embedder.file)
    people, owner, embs, crops, quality = [], [], [], [], []
    total = sum(len(v) for v in folders.values())
    done = 0
    for person, files in sorted(folders.items()):
        for f in files:
            done += 1
            r = pipe.photo(f)
            if r.error or not len(r.embeddings):
                continue
            face = r.faces[0]
            if person not in people:
                people.append(person)
            owner.append(people.index(person))
            embs.append(r.embeddings[0])
            crops.append(face.crop)
            quality.append(crop_quality(float(face.box[4]), float(face.box[2] - face.box[0]), face.crop))
            print(f"\r  embedding {done}/{total}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    dev = DevSet(people, np.asarray(owner, np.int32), np.stack(embs).astype(np.float32), np.stack(crops),
                 np.asarray(quality, np.float32), pipe.embedder.file)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, people=np.array(dev.people), owner=dev.owner, embeddings=dev.embeddings,
                        crops=dev.crops, quality=dev.quality)
    tmp.replace(path)
    return dev


@dataclass
class Visit:
    time: float
    person: int
    rows: np.ndarray  # photos of this visit (indices into the DevSet)
    nth: int  # 0: first visit, 1, 2: re-visits


def schedule(dev: DevSet, seed: int, gap: float) -> list[Visit]:
    """Every identity with >= 2 photos visits 2-3 times, 1-3 different photos each time; the first
    visits one after another, re-visits within the next ``gap`` arrivals, all interleaved in time."""
    rng = random.Random(seed)
    people = [i for i in range(len(dev.people)) if len(dev.photos_of(i)) >= 2]
    rng.shuffle(people)
    visits = []
    for k, person in enumerate(people):
        rows = list(dev.photos_of(person))
        rng.shuffle(rows)
        n = min(rng.choice((2, 3)), len(rows))
        sizes = [1] * n
        for _ in range(len(rows) - n):  # hand out the remaining photos, at most 3 per visit
            j = rng.randrange(n)
            if sizes[j] < 3:
                sizes[j] += 1
        t = k + rng.random()
        for nth, size in enumerate(sizes):
            visits.append(Visit(t, person, np.asarray(rows[:size]), nth))
            rows = rows[size:]
            t += rng.uniform(0.5, gap)
    return sorted(visits, key=lambda v: v.time)


@dataclass
class Outcome:
    strangers: int
    visitors: int
    merges: int  # visitors holding visits of > 1 identity
    revisits: int  # re-visits whose stranger's earlier visitor was still stored
    joined: int  # ... that joined it

    @property
    def merges_per_50(self) -> float:
        return 50.0 * self.merges / self.strangers

    @property
    def joined_share(self) -> float:
        return self.joined / max(self.revisits, 1)


def replay(dev: DevSet, visits: list[Visit], same: float | JoinRule, max_visitors: int) -> Outcome:
    """The visits through ``Visitors.add_visit`` and ``prune``, as the daemon stores them."""
    store = Visitors.empty("bench", dev.embeddings.shape[1], dev.crops.shape[1])
    start = datetime(2025, 1, 1, tzinfo=UTC)
    held: dict[str, set[int]] = {}  # visitor id -> identities of the visits it took
    revisits = joined = 0
    for v in visits:
        now = start + timedelta(minutes=v.time)
        if v.nth:
            stored = {vid for vid in (s.id for s in store.visitors) if v.person in held[vid]}
            revisits += bool(stored)
        vid = store.add_visit(dev.crops[v.rows], dev.embeddings[v.rows], dev.quality[v.rows], same, KEEP, now)
        if v.nth and stored:
            joined += vid in stored
        held.setdefault(vid, set()).add(v.person)
        store.prune(max_visitors, keep_days=30.0, now=now)
    strangers = len({v.person for v in visits})
    return Outcome(strangers, len(held), sum(len(p) > 1 for p in held.values()), revisits, joined)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--stored", default="10,50", help="max_visitors of the store")
    ap.add_argument("--targets", default=f"{VISIT_FAR},0.02,0.05",
                    help="JoinRule targets (per visit over the store)")
    ap.add_argument("--gap", type=float, default=4.0, help="re-visits come within this many arrivals")
    ap.add_argument("--embedder", default=None, help="embedder file (default: the manifest's)")
    args = ap.parse_args()
    dev = load_dev(args.data, args.embedder)
    entry = runtime.model_spec(dev.embedder).entry
    points = classify.OperatingPoints.from_manifest(entry)
    if points is None:
        raise SystemExit(f"{dev.embedder}: no operating points in the manifest")
    seeds = [int(s) for s in args.seeds.split(",")]
    rules: list[tuple[str, float | JoinRule]] = [(f"before: fixed {points.threshold(FIXED_FAR):.4f}",
                                                   points.threshold(FIXED_FAR))]
    rules += [(f"after: JoinRule target {t:g}", JoinRule(points, t)) for t in map(float, args.targets.split(","))]
    plans = {s: schedule(dev, s, args.gap) for s in seeds}
    print(f"{dev.embedder} on {args.data.name}: {len(dev.people)} identities, {len(dev.owner)} photos with a face; "
          f"{len(plans[seeds[0]])} visits per seed; median of seeds {seeds}")
    head = f"{'rule':34} {'stored':>6} {'join at':>7} {'strangers':>9} {'visitors':>8} {'merges':>6} {'/50':>5} " \
           f"{'re-visits':>9} {'joined':>7}"
    print(head)
    print("-" * len(head))
    for label, same in rules:
        for m in (int(x) for x in args.stored.split(",")):
            out = [replay(dev, plans[s], same, m) for s in seeds]
            med = {k: statistics.median(getattr(o, k) for o in out)
                   for k in ("strangers", "visitors", "merges", "merges_per_50", "revisits", "joined_share")}
            join = same.distance(m) if isinstance(same, JoinRule) else same
            print(f"{label:34} {m:>6} {join:>7.4f} {med['strangers']:>9.0f} {med['visitors']:>8.0f} "
                  f"{med['merges']:>6.0f} {med['merges_per_50']:>5.2f} {med['revisits']:>9.0f} "
                  f"{med['joined_share']:>7.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
