"""A real `facepi web` process and a small HTTP client for it (cookies kept by hand, redirects not
followed: the tests look at what the server answers, not at what a browser would make of it)."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

from conftest import ROOT, free_port, wait

PASSWORD = "correct horse battery"


class WebServer:
    def __init__(self, tmp: Path, gallery: Path, web: str = "", env: dict[str, str] | None = None,
                 password: str | None = PASSWORD) -> None:
        self.port = free_port()
        self.config = tmp / "facepi.toml"
        self.config.write_text(f'[recognition]\ngallery = "{gallery}"\n[web]\nlisten = "127.0.0.1:{self.port}"\n{web}')
        e = {k: v for k, v in os.environ.items() if not k.startswith("FACEPI_")}
        e |= {"PYTHONUNBUFFERED": "1", **(env or {})}
        if password is not None:
            e["FACEPI_WEB_PASSWORD"] = password
        self.err = tmp / f"web-{self.port}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "facepi", "web", "--config", str(self.config)], cwd=ROOT,
                                     env=e, stdout=subprocess.DEVNULL, stderr=open(self.err, "w"))

    def ready(self, timeout: float = 30.0) -> WebServer:
        assert wait(lambda: "serving http" in self.err.read_text() or self.proc.poll() is not None, timeout), \
            self.err.read_text()
        assert self.proc.poll() is None, self.err.read_text()
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Client:
    def __init__(self, port: int) -> None:
        self.port, self.cookies = port, {}

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        con = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        h = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        con.request(method, path, body, h | (headers or {}))
        r = con.getresponse()
        data = r.read()
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                name, value = v.split(";", 1)[0].split("=", 1)
                if value in ('""', ""):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = value
        out = {k.lower(): v for k, v in r.getheaders()}
        out["set-cookie"] = "\n".join(v for k, v in r.getheaders() if k.lower() == "set-cookie")
        con.close()
        return r.status, out, data

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path)

    def post(self, path: str, fields: dict[str, str], headers: dict[str, str] | None = None):
        from urllib.parse import urlencode

        return self.request("POST", path, urlencode(fields).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"} | (headers or {}))

    def upload(self, fields: dict[str, str], files: list[tuple[str, bytes]], path: str = "/upload"):
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in fields.items()]
        parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="photos"; filename="{n}"\r\n'
                  f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n" for n, data in files]
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def token(self, path: str) -> str:
        status, _, body = self.get(path)
        assert status == 200, (status, body[:300])
        return re.search(rb'name="csrf" value="([^"]+)"', body).group(1).decode()

    def login(self, password: str = PASSWORD) -> int:
        token = self.token("/login")
        return self.post("/login", {"csrf": token, "password": password})[0]


def gallery_bytes(gallery: Path) -> str:
    """The gallery database's bytes (after a checkpoint, so the write-ahead log is in the file)."""
    db = gallery.with_suffix(".db")
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return hashlib.sha256(db.read_bytes() + (db.with_name(db.name + "-wal").read_bytes()
                                               if db.with_name(db.name + "-wal").exists() else b"")).hexdigest()


def enrolled(root: Path, faces_root: Path, photos: int = 5) -> Path:
    """Four people enrolled as `facepi enroll` does it (their face crops kept: what the page shows), the
    first ``photos`` train photos each; the fifth person (mindy_kaling) is the stranger at the door."""
    from facepi.identity import family
    from facepi.vision.photos import load_pipeline

    pipeline = load_pipeline()
    g = root / "gallery.db"
    for person in ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna"):
        shots = sorted((faces_root / "train" / person).glob("*.jpg"))[:photos]
        assert family.enrol(g, person, pipeline, shots, "cli", force=True).done is not None
    gallery_bytes(g)  # checkpointed: one file to copy
    return g
