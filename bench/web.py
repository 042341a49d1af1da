"""The household page on a Pi's budget: the idle page process's memory, and the time to show the people page
of a 20-person gallery, measured on a real `facepi web` process over HTTP.

    .venv/bin/python bench/web.py [--people 20] [--photos 5] [--requests 20] [--json]

The gallery: PEOPLE CelebA identities from ../shared/data/celeba-dev (read in place), PHOTOS each, enrolled
through the guarded path as `facepi enroll` does (their face crops kept: the page shows every one). Printed:
the page process's RSS idle after start, after a login and the pages shown, and after an upload of three
photos (the models loaded for it, then let go); the median time of GET /people (HTML, PEOPLE x PHOTOS faces)
and of all its face images, against GET /login (the server's own floor) measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
CELEBA = ROOT.parent / "shared" / "data" / "celeba-dev"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=20)
    ap.add_argument("--photos", type=int, default=5)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not CELEBA.is_dir():
        raise SystemExit(f"{CELEBA}: absent (development data, read in place)")
    from web_client import Client, WebServer

    from facepi.identity import family
    from facepi.vision.photos import load_pipeline

    tmp = Path(tempfile.mkdtemp(prefix="facepi-bench-web-"))
    g = tmp / "gallery.db"
    pipeline = load_pipeline()
    ids = sorted(p for p in CELEBA.iterdir() if p.is_dir())
    enrolled, spare = 0, None
    for person in ids:
        shots = sorted(person.glob("*.jpg"))
        if enrolled < args.people and len(shots) >= args.photos:
            if family.enrol(g, f"person {person.name}", pipeline, shots[:args.photos], "cli", force=True).done:
                enrolled += 1
        elif enrolled >= args.people and len(shots) >= 3:
            spare = shots[:3]
            break
    del pipeline
    server = WebServer(tmp, g).ready(60)
    try:
        pid = server.proc.pid
        time.sleep(2.0)
        idle = rss_mb(pid)
        c = Client(server.port)
        assert c.login() == 303
        status, _, body = c.get("/people")
        faces = re.findall(rb'src="(/img/face/\d+\.jpg)"', body)
        assert status == 200 and len(faces) >= enrolled * args.photos * 0.9, (status, len(faces))
        login_ms = timed(lambda: Client(server.port).get("/login"), args.requests)
        people_ms = timed(lambda: c.get("/people"), args.requests)
        images_ms = timed(lambda: [c.get(f.decode()) for f in faces], max(3, args.requests // 4))
        for page in ("/events", "/visitors", "/journal"):
            c.get(page)
        after_pages = rss_mb(pid)
        token = c.token("/people")
        t = time.perf_counter()
        status, _, body = c.upload({"csrf": token, "name": "newcomer"}, [(p.name, p.read_bytes()) for p in spare])
        upload_s = time.perf_counter() - t
        assert status == 200 and b"Enrolled 3 photo(s)" in body, body[-500:]
        time.sleep(1.0)
        after_upload = rss_mb(pid)
        peak = next(int(x.split()[1]) / 1024 for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if x.startswith("VmHWM:"))
    finally:
        server.stop()
    out = {"people": enrolled, "faces": len(faces), "rss_idle_mb": round(idle, 1),
           "rss_after_pages_mb": round(after_pages, 1), "rss_after_upload_mb": round(after_upload, 1),
           "rss_peak_mb": round(peak, 1), "people_page_ms": round(people_ms, 1), "login_page_ms": round(login_ms, 1),
           "people_page_vs_login": round(people_ms / login_ms, 1), "all_face_images_ms": round(images_ms, 1),
           "upload_3_photos_s": round(upload_s, 2)}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"facepi web, {enrolled} people x {args.photos} photos ({len(faces)} faces shown)")
        print(f"  RSS idle {idle:.1f} MB; after login and every page {after_pages:.1f} MB; after a 3-photo upload "
              f"{after_upload:.1f} MB (peak {peak:.1f} MB; the models load in the upload's own process)")
        print(f"  GET /people median {people_ms:.1f} ms ({people_ms / login_ms:.1f} x GET /login, {login_ms:.1f} ms); "
              f"its {len(faces)} face images {images_ms:.0f} ms; the upload {upload_s:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
