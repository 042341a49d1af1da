"""A photo of Alice is not Alice: presentation attacks accepted as the member, without and with liveness.

    .venv/bin/python bench/liveness.py [--data DIR] [--nuaa-step 1] [--visit 5]

DATA defaults to ../shared/data/liveness-dev (read in place, never copied): NUAA (one webcam, live
and printed-photo frames of the same people, sessions 01-02) and MSU-MFSD (one phone camera: one
live frame and print / iPad / iPhone replay frames per person).

Per set, the people are enrolled in one gallery from their own live frames (NUAA: every 8th live
frame of a person; those frames are never measured; MSU has one live frame per person, so it is
both enrolled and measured: MSU's BPCER is liveness's alone, recognition of that frame is given).
Then every other frame is classified as the door would (facepi's MTCNN, MobileFaceNet, the
gallery's own threshold), ISO/IEC 30107-3 style, per attack type:

- APCER: attack frames **accepted as the member shown** (named that member, and, with liveness,
  judged live);
- BPCER: live frames of a member **not** accepted as that member.

Liveness is calibrated per camera on frames never measured in the same fold: leave-one-person-out
(the camera's other people's live frames) for both sets, and for NUAA also across sessions
(calibrated on one session's live frames, measured on the other's, both ways: the hard case of a
camera whose light changed). Visit level (NUAA): consecutive frames of one recording in groups of
``--visit``, combined by facepi.identity.liveness.combine (median log-odds), a visit accepted when
the majority of its frames are named the member and the combined score is live.

Also: the crop's effect (AUC of the score with minivision's crop rule, as used, against a square
crop of the same box), how many faces sat at the frame edge (crop shifted or its scale reduced)
and how they fared, the median ms per face of the liveness check against MobileFaceNet's embedding
in the same run, and the RSS added by loading the liveness models.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facepi.identity import classify  # noqa: E402
from facepi.identity import liveness as decide  # noqa: E402
from facepi.identity.enrol import new_gallery, recalibrate  # noqa: E402
from facepi.vision import runtime  # noqa: E402
from facepi.vision.images import list_images  # noqa: E402
from facepi.vision.liveness import LivenessModel, context_box  # noqa: E402
from facepi.vision.photos import load_pipeline  # noqa: E402

ENROL_EVERY = 8  # NUAA: every 8th live frame of a person is enrolled (never measured)


def items(data: Path, nuaa_step: int) -> list[dict]:
    out = []
    for live in (True, False):
        kind = "live" if live else "attack"
        for d in sorted((data / "nuaa" / kind).iterdir()):
            for p in list_images(d)[::nuaa_step]:
                m = re.match(r"(\d+)_(\d+)_(\d+)_(\d+)_(\d+)", p.stem)
                out.append({"set": "nuaa", "live": live, "person": d.name, "path": p,
                            "type": "live" if live else "printed_photo", "session": m.group(4),
                            "video": f"{kind}/{p.stem.rsplit('_', 1)[0]}", "n": int(m.group(5))})
        for p in list_images(data / "msu" / kind):
            m = re.search(r"client(\d+)", p.stem)
            t = "live" if live else next(t for t in ("printed_photo", "ipad_video", "iphone_video") if t in p.stem)
            out.append({"set": "msu", "live": live, "person": m.group(1), "path": p, "type": t,
                        "session": "-", "video": p.stem, "n": 0})
    return out


def measure(pipe, model: LivenessModel, rows: list[dict]) -> tuple[list[dict], list[float]]:
    """Embedding, liveness score (and the square-crop variant) of the largest face of each frame."""
    kept, ms = [], []
    for i, r in enumerate(rows):
        f = pipe.photo(r["path"], "largest", accept_aligned=False, keep_image=True)
        if not f.faces:
            continue
        box, rgb = f.faces[0].box, f.image
        t = time.perf_counter()
        r["score"] = model.score(rgb, box)
        ms.append((time.perf_counter() - t) * 1000)
        x1, y1, x2, y2 = box[:4]
        h = max(x2 - x1, y2 - y1) / 2
        square = np.array([(x1 + x2) / 2 - h, (y1 + y2) / 2 - h, (x1 + x2) / 2 + h, (y1 + y2) / 2 + h])
        r["square"] = model.score(rgb, square)
        r["edge"] = [_at_edge(box, rgb.shape, n.scale) for n in model.nets]
        r["emb"] = f.embeddings[0]
        kept.append(r)
        if (i + 1) % 200 == 0:
            print(f"  {i + 1}/{len(rows)} frames", file=sys.stderr, flush=True)
    return kept, ms


def _at_edge(box: np.ndarray, shape: tuple[int, ...], scale: float) -> str:
    """'reduced' (the face too large for this context in this frame), 'shifted' (near the edge), or ''."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    bw, bh = x2 - x1, y2 - y1
    if scale > min((shape[0] - 1) / bh, (shape[1] - 1) / bw):
        return "reduced"
    cx, cy = x1 + bw / 2, y1 + bh / 2
    ideal = (int(cx - bw * scale / 2), int(cy - bh * scale / 2))
    return "shifted" if context_box(box, shape, scale)[:2] != ideal else ""


def auc(live: np.ndarray, attack: np.ndarray) -> float:
    if not len(live) or not len(attack):
        return float("nan")
    return float(np.mean(live[:, None] > attack[None, :]) + 0.5 * np.mean(live[:, None] == attack[None, :]))


def recognise(pipe, rows: list[dict], enrolled: dict[str, list[np.ndarray]]) -> None:
    g = new_gallery(pipe, "centroid", classify.DEFAULT_TARGET_FAR)
    for person, embs in sorted(enrolled.items()):
        g.add(person, np.stack(embs), [f"{person}/{i}" for i in range(len(embs))])
    recalibrate(g)
    clf = classify.Classifier(g, "centroid", float(g.meta["threshold"]))
    for r, p in zip(rows, clf.predict(np.stack([r["emb"] for r in rows])), strict=True):
        r["named"] = p.name == r["person"]


def thresholds(rows: list[dict], split: str) -> None:
    """r['thr']: the threshold of r's camera calibrated on frames never measured with r (``split``)."""
    live = [r for r in rows if r["live"]]
    groups = {r["person"] if split == "person" else r["session"] for r in rows}
    for g in groups:
        key = (lambda r: r["person"]) if split == "person" else (lambda r: r["session"])
        cal = decide.calibrate([r["score"] for r in live if key(r) != g and not r.get("enrolled")], "bench")
        for r in rows:
            if key(r) == g:
                r["thr"] = cal.threshold


def table(name: str, rows: list[dict]) -> None:
    measured = [r for r in rows if not r.get("enrolled")]
    print(f"\n{name}")
    print(f"  {'':<26}{'n':>6}{'without liveness':>18}{'with liveness':>15}{'uncalibrated':>14}")
    types = sorted({r["type"] for r in measured}, key=lambda t: (t != "live", t))
    for t in [*types, "all attacks"]:
        sel = [r for r in measured if r["type"] == t or (t == "all attacks" and not r["live"])]
        rates = [np.mean([r["named"] and r["score"] >= thr(r) for r in sel])
                 for thr in (lambda r: 0.0, lambda r: r["thr"], lambda r: decide.UNCALIBRATED)]
        what = "BPCER" if t == "live" else "APCER"
        if t == "live":
            rates = [1 - x for x in rates]
        print(f"  {what + ' ' + t:<26}{len(sel):>6}{100 * rates[0]:>17.1f}%{100 * rates[1]:>14.1f}%"
              f"{100 * rates[2]:>13.1f}%")


def visits(rows: list[dict], size: int) -> None:
    by = defaultdict(list)
    for r in rows:
        if not r.get("enrolled"):
            by[(r["video"], r["person"])].append(r)
    out = defaultdict(list)
    for frames in by.values():
        frames.sort(key=lambda r: r["n"])
        for k in range(0, len(frames), size):
            v = frames[k:k + size]
            named = sum(r["named"] for r in v) * 2 > len(v)
            live = decide.combine([r["score"] for r in v]) >= v[0]["thr"]
            out[v[0]["type"]].append((named, named and live))
    for t, res in sorted(out.items(), key=lambda kv: kv[0] != "live"):
        a = np.array(res)
        if t == "live":
            print(f"  visits of <= {size} frames, BPCER live: {len(a)} visits, {100 * (1 - a[:, 0].mean()):.1f}% "
                  f"without liveness, {100 * (1 - a[:, 1].mean()):.1f}% with")
        else:
            print(f"  visits of <= {size} frames, APCER {t}: {len(a)} visits, {100 * a[:, 0].mean():.1f}% "
                  f"without liveness, {100 * a[:, 1].mean():.1f}% with")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "liveness-dev")
    ap.add_argument("--nuaa-step", type=int, default=1, help="every Nth NUAA frame (default: all)")
    ap.add_argument("--visit", type=int, default=5, help="frames per visit for the visit-level figures")
    args = ap.parse_args()
    if not (args.data / "nuaa").is_dir():
        raise SystemExit(f"{args.data}: not found (the development data lives outside the repository)")
    pipe = load_pipeline(threads=1)
    rows = items(args.data, args.nuaa_step)
    warm = pipe.photo(rows[0]["path"], "largest", accept_aligned=False, keep_image=True)  # detector and embedder
    before = runtime.resident_bytes()
    model = LivenessModel.load(threads=1)
    model.score(warm.image, warm.faces[0].box)  # interpreters allocated and run once
    added = (runtime.resident_bytes() - before) / 1e6
    rows, ms = measure(pipe, model, rows)
    embed_ms = []
    crop = np.zeros((1, pipe.embedder.image_size, pipe.embedder.image_size, 3), np.uint8)
    for _ in range(50):
        t = time.perf_counter()
        pipe.embedder.embed(crop)
        embed_ms.append((time.perf_counter() - t) * 1000)
    print(f"{len(rows)} faces; liveness: {'+'.join(model.files)}, calibrated at BPCER target "
          f"{100 * decide.DEFAULT_BPCER:g}% per camera; recognition: {pipe.embedder.name}")

    for name in ("nuaa", "msu"):
        sel = [r for r in rows if r["set"] == name]
        enrolled: dict[str, list[np.ndarray]] = defaultdict(list)
        seen: dict[str, int] = defaultdict(int)
        for r in sel:
            if r["live"]:
                if name == "msu" or seen[r["person"]] % ENROL_EVERY == 0:
                    enrolled[r["person"]].append(r["emb"])
                    r["enrolled"] = name == "nuaa"
                seen[r["person"]] += 1
        recognise(pipe, sel, enrolled)
        live = np.array([r["score"] for r in sel if r["live"]])
        attack = np.array([r["score"] for r in sel if not r["live"]])
        sq_live = np.array([r["square"] for r in sel if r["live"]])
        sq_att = np.array([r["square"] for r in sel if not r["live"]])
        thresholds(sel, "person")
        table(f"{name.upper()}: {len(enrolled)} people enrolled; liveness calibrated leave-one-person-out", sel)
        if name == "nuaa":
            visits(sel, args.visit)
            thresholds(sel, "session")
            table("NUAA, liveness calibrated on the other session's live frames (the light changed)", sel)
            visits(sel, args.visit)
            thresholds(sel, "person")
        print(f"  crop: AUC {auc(live, attack):.4f} with minivision's rule (as used), {auc(sq_live, sq_att):.4f} "
              f"with a square crop of the same MTCNN box")
        for k, net in enumerate(model.nets):
            for how in ("reduced", "shifted"):
                e = [r for r in sel if r["edge"][k] == how]
                wrong = sum(r["live"] != (r["score"] >= r["thr"]) for r in e)
                print(f"  x{net.scale} crop {how:<8}: {len(e):>4} of {len(sel)} faces ({sum(r['live'] for r in e)} "
                      f"live), {wrong} of them judged wrongly (leave-one-person-out threshold)")
    print(f"\ncost: liveness {statistics.median(ms):.2f} ms per face (median of {len(ms)}; both nets, crops "
          f"included, 1 thread) vs MobileFaceNet embedding {statistics.median(embed_ms):.2f} ms "
          f"({statistics.median(ms) / statistics.median(embed_ms):.1f}x); RSS added by the liveness models "
          f"{added:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
