"""``facepi``: the on-device command line. A thin layer over the library API."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facepi import __version__, runtime


def _models(args: argparse.Namespace) -> int:
    manifest = runtime.load_manifest(args.models)
    for name, entry in manifest["models"].items():
        present = (Path(args.models or runtime.models_dir()) / name).exists()
        print(f"{name:<28}{entry.get('kind', '?'):<10}{entry.get('precision', '?'):<9}"
              f"{entry['size'] / 1e6:>7.1f} MB  {'present' if present else 'missing (run facepi-convert)'}")
    print(f"default embedder: {manifest.get('default_embedder')}")
    return 0


def _detect(args: argparse.Namespace) -> int:
    from facepi.detect import Detector, DetectorParams
    from facepi.images import ImageError, read_rgb

    detector = Detector(args.models, DetectorParams(minsize=args.minsize), threads=args.threads)
    failed = 0
    for path in args.images:
        try:
            rgb = read_rgb(path)
        except ImageError as e:
            print(f"facepi: {e}", file=sys.stderr)
            failed += 1
            continue
        boxes, points = detector.detect(rgb)
        faces = [{"box": [round(float(v), 1) for v in b[:4]], "score": round(float(b[4]), 4),
                  "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in p]}
                 for b, p in zip(boxes, points, strict=True)]
        print(json.dumps({"path": str(path), "faces": faces}))
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facepi", description=__doc__)
    p.add_argument("--version", action="version", version=f"facepi {__version__}")
    p.add_argument("--models", type=Path, default=None, help="models folder (default: the bundled models/)")
    p.add_argument("--threads", type=int, default=2, help="TFLite threads (default: 2)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list the models in the manifest").set_defaults(func=_models)
    d = sub.add_parser("detect", help="print the faces MTCNN finds in photos, as JSON lines")
    d.add_argument("images", nargs="+", type=Path)
    d.add_argument("--minsize", type=int, default=20)
    d.set_defaults(func=_detect)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except runtime.ModelError as e:
        print(f"facepi: error: {e}", file=sys.stderr)
        return 2
