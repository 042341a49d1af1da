"""A loopback IP camera: MJPEG over HTTP (multipart/x-mixed-replace), as many door cameras serve.

Used by the tests and the soak benchmark as a real network source for OpenCV/FFmpeg:

    python tests/mjpeg_camera.py PORT SOURCE [--fps 8] [--seconds S] [--user U [--query-login usr,pwd]]
                                 [--stall-after N]

SOURCE is a JPEG (the same frame for ever) or a video file (looped). With ``--user``
the camera demands HTTP Basic auth, password from $CAMERA_PASSWORD (never argv); with
``--query-login USERKEY,PASSKEY`` the login instead, in the query string as Reolink
(``?user=..&password=..``) and Foscam (``?usr=..&pwd=..``) cameras take it.
``--stall-after N`` sends N frames, then keeps the connection open and silent: a hung camera.
"""

from __future__ import annotations

import argparse
import base64
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import cv2


def frames(source: Path) -> list[bytes]:
    if source.suffix.lower() in (".jpg", ".jpeg"):
        return [source.read_bytes()]
    cap = cv2.VideoCapture(str(source))
    out = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    cap.release()
    if not out:
        raise SystemExit(f"{source}: no frames")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("source", type=Path)
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--seconds", type=float, default=0.0, help="stop serving after this long (0: never)")
    ap.add_argument("--user", default="")
    ap.add_argument("--query-login", default="", help="USERKEY,PASSKEY: the login in the query string")
    ap.add_argument("--stall-after", type=int, default=0)
    args = ap.parse_args()
    jpegs = frames(args.source)
    expected = ""
    if args.user:
        login = f"{args.user}:{os.environ.get('CAMERA_PASSWORD', '')}".encode()
        expected = "Basic " + base64.b64encode(login).decode()
    start = time.monotonic()
    clock = {"i": 0}  # the stream position is shared: a reconnecting client resumes "live"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if args.query_login:
                query = parse_qs(urlsplit(self.path).query)
                user_key, pass_key = args.query_login.split(",")
                ok = query.get(user_key) == [args.user] and query.get(pass_key) == [os.environ["CAMERA_PASSWORD"]]
            else:
                ok = not expected or self.headers.get("Authorization") == expected
            if not ok:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            sent = 0
            try:
                while not args.seconds or time.monotonic() - start < args.seconds:
                    if args.stall_after and sent >= args.stall_after:
                        time.sleep(3600)  # connected and silent
                    jpeg = jpegs[clock["i"] % len(jpegs)]
                    clock["i"] += 1
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                    sent += 1
                    time.sleep(1.0 / args.fps)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.seconds:
        threading.Timer(args.seconds + 0.5, lambda: os._exit(0)).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
