"""What the liveness check costs at the door: ms per member face, and memory.

    .venv/bin/python bench/liveness_cost.py [--faces 60] [--json]

Real faces: NUAA live and printed-photo frames (../shared/data/liveness-dev), their MTCNN boxes found
by the daemon's detector once, then ``LivenessModel.score`` (both MiniFASNets, the context crops
included: exactly the daemon's call) timed per face after a warm-up, with 1 and 2 TFLite threads;
beside it, in the same run, the embedder's ms per face (MobileFaceNet, batch 1: what every face
already costs), as the reference. Memory: a fresh process loads what ``facepi run`` loads (detector
and embedder), runs them on a face, then loads the liveness models and scores faces: the VmRSS
difference is what ``[liveness] enabled`` adds; and ``facepi run`` itself on the demo door
video (four members, a stranger) without and with ``[liveness]``: its peak RSS (VmHWM) and the
liveness status. Strangers and an empty door are never scored (the daemon scores only tracks whose
decision names a member): see ``bench/bench_idle.py --liveness`` for the idle figure with and without.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
NUAA = ROOT.parent / "shared" / "data" / "liveness-dev" / "nuaa"


def faces(n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(rgb, box, landmarks) of ``n`` real faces, half live, half printed photos, spread over the people."""
    from facepi.vision.images import read_rgb
    from facepi.vision.photos import load_pipeline

    pipe = load_pipeline()
    paths = []
    for kind in ("live", "attack"):
        files = sorted((NUAA / kind).glob("*/*.jpg"))
        paths += files[:: max(1, len(files) // (n // 2))][: n // 2]
    out = []
    for p in paths:
        rgb = read_rgb(p)
        boxes, pts = pipe.detector.detect(rgb)
        if len(boxes):
            out.append((rgb, boxes[0], pts[0]))
    return out


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_child() -> None:
    """In a fresh process: RSS with the daemon's models, then with the liveness models added."""
    from facepi.vision.liveness import LivenessModel
    from facepi.vision.photos import load_pipeline

    found = faces(10)
    pipe = load_pipeline(embed_batch=1)
    for rgb, box, pts in found:
        pipe.embedder.embed(pipe.align(rgb, box, pts)[None])
    before = rss_mb()
    model = LivenessModel.load(threads=1)
    for rgb, box, _ in found:
        model.score(rgb, box)
    print(json.dumps({"rss_mb_daemon_models": round(before, 1), "rss_mb_with_liveness": round(rss_mb(), 1)}))


def daemon_rss() -> dict:
    """``facepi run`` on the demo video (members and a stranger), without and with [liveness]: peak RSS."""
    import os

    from _proc import run_with_peak_rss
    from facepi_convert import sources

    from facepi.demo import prepare

    video, gallery = prepare(sources.cache_dir(), log=lambda m: None)
    out = {}
    for label, extra in (("without", {}), ("with", {"FACEPI_LIVENESS_ENABLED": "1"})):
        env = {**os.environ, "FACEPI_MQTT_HOST": "", **extra}
        _, err, peak, _ = run_with_peak_rss([sys.executable, "-m", "facepi", "run", "--source", str(video),
                                             "--classifier", str(gallery), "--fast"], ROOT, env)
        out[f"daemon_peak_rss_mb_{label}_liveness"] = round(peak, 1)
        if extra:
            final = json.loads([x for x in err.splitlines() if "final status:" in x][-1].split("final status: ")[1])
            out["daemon_liveness_status"] = final.get("liveness")
    out["daemon_peak_rss_mb_added"] = round(out["daemon_peak_rss_mb_with_liveness"] -
                                            out["daemon_peak_rss_mb_without_liveness"], 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=60)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child()
        return 0
    if not NUAA.is_dir():
        raise SystemExit(f"{NUAA}: the liveness dev data is not here")
    from facepi.vision.liveness import LivenessModel
    from facepi.vision.photos import load_pipeline

    found = faces(args.faces)
    out: dict = {"faces": len(found)}
    embed = load_pipeline(threads=1, embed_batch=1)
    crops = [embed.align(rgb, box, pts)[None] for rgb, box, pts in found]
    models = {threads: LivenessModel.load(threads=threads) for threads in (1, 2)}
    # interleaved per face (embed, liveness on 1 thread, on 2), so a burst of other load hits all three alike
    ms: dict[str, list[float]] = {"embed": [], "live1": [], "live2": []}
    calls = {"embed": lambda i: embed.embedder.embed(crops[i]),
             "live1": lambda i: models[1].score(found[i][0], found[i][1]),
             "live2": lambda i: models[2].score(found[i][0], found[i][1])}
    for i in range(min(5, len(found))):
        for call in calls.values():
            call(i)  # warm-up (XNNPACK packs its weights on the first run)
    for _ in range(3):
        for i in range(len(found)):
            for key, call in calls.items():
                t = time.perf_counter()
                call(i)
                ms[key].append((time.perf_counter() - t) * 1000)
    out["embed_ms_per_face_p50_1_thread"] = round(statistics.median(ms["embed"]), 2)
    for threads in (1, 2):
        out[f"liveness_ms_per_face_p50_{threads}_thread"] = round(statistics.median(ms[f"live{threads}"]), 2)
        out[f"liveness_ms_per_face_p95_{threads}_thread"] = round(float(np.percentile(ms[f"live{threads}"], 95)), 2)
    out["liveness_over_embed_1_thread"] = round(out["liveness_ms_per_face_p50_1_thread"] /
                                                out["embed_ms_per_face_p50_1_thread"], 2)
    child = subprocess.run([sys.executable, __file__, "--rss-child"], capture_output=True, text=True, cwd=ROOT)
    if child.returncode != 0:
        raise SystemExit(child.stderr[-3000:])
    rss = json.loads(child.stdout.strip().splitlines()[-1])
    out |= rss | {"rss_mb_added": round(rss["rss_mb_with_liveness"] - rss["rss_mb_daemon_models"], 1)}
    out |= daemon_rss()
    out["target_ms_per_face_met"] = out["liveness_ms_per_face_p50_1_thread"] <= 10.0
    out["target_rss_met"] = max(out["rss_mb_added"], out["daemon_peak_rss_mb_added"]) <= 15.0
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
