"""``facepi liveness calibrate FRAMES --camera-id ID``: this camera's liveness threshold, from live faces
it saw; and the liveness side of ``facepi classify --liveness`` and ``facepi gallery check``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from facepi.cli import shared


def add_liveness_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser,
                        gal: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``facepi liveness ...`` on ``sub`` (the subparsers of facepi's parser)."""
    from facepi.identity.liveness import DEFAULT_BPCER

    lv = sub.add_parser("liveness", help="is it a live face or a photo: facepi liveness calibrate FRAMES "
                                         "--camera-id ID (per camera)")
    lsub = lv.add_subparsers(dest="liveness_command", required=True)
    c = lsub.add_parser("calibrate", parents=[common, gal],
                        help="set this camera's liveness threshold from live faces it saw (anyone's)")
    c.add_argument("frames", type=Path, help="folder of frames from this camera showing live faces (sub-folders too)"
                                             "; never photos or screens held to it")
    c.add_argument("--camera-id", required=True, help="the camera_id of the camera the frames come from")
    c.add_argument("--bpcer", type=float, default=DEFAULT_BPCER,
                   help="share of these live faces the threshold refuses (default: %(default)s)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=calibrate)
    return lv


def frame_paths(folder: Path) -> list[Path]:
    from facepi.vision.images import ImageError, list_images, people_folders

    if not folder.is_dir():
        raise ImageError(f"{folder}: not a folder (expected frames from the camera, as image files)")
    paths = list_images(folder) + [p for photos in people_folders(folder).values() for p in photos]
    if not paths:
        raise ImageError(f"{folder}: no images (looked in it and its sub-folders)")
    return paths


def calibrate(args: argparse.Namespace) -> int:
    from facepi.identity import liveness as decide
    from facepi.identity.gallery import GalleryError, db_path
    from facepi.vision.liveness import LivenessModel

    decide.check_camera_id(args.camera_id)
    gallery = str(shared.gallery_path(args))
    if not db_path(gallery).parent.is_dir():  # said before minutes of scoring, not after
        raise GalleryError(f"{db_path(gallery)}: no such folder {db_path(gallery).parent} (nothing created)")
    model = LivenessModel.load(args.models, threads=max(args.threads, 1))
    pipeline = shared.pipeline(args)
    paths = frame_paths(args.frames)
    progress = None if args.json else shared.progress("scoring")
    scores, missing = [], []
    for i, path in enumerate(paths):
        r = pipeline.photo(path, "largest", accept_aligned=False, embed=False, keep_image=True)
        if r.faces:
            scores.append(model.score(r.image, r.faces[0].box))
        else:
            missing.append(str(path))
        if progress:
            progress(i + 1, len(paths))
    cal = decide.calibrate(scores, args.camera_id, args.bpcer, models="+".join(model.files))
    decide.save(gallery, cal)
    if args.json:
        print(json.dumps({"calibration": cal.to_json(), "frames": len(paths), "no_face": missing}, indent=1))
    else:
        print(f"{len(scores)} live face(s) from {len(paths)} frame(s)"
              + (f" ({len(missing)} without a face)" if missing else ""))
        print(cal.describe())
        print(f"saved in {gallery}")
    return 0


def for_classify(args: argparse.Namespace) -> tuple[Any, Any] | None:
    """(model, calibration) for ``facepi classify --liveness --camera-id ID``; None without --liveness."""
    if not args.liveness:
        if args.camera_id:
            raise ValueError("--camera-id goes with --liveness (whose calibration to judge liveness by)")
        return None
    if not args.camera_id:
        raise ValueError("--liveness needs --camera-id ID: the camera the photos come from (each camera has its "
                         "own liveness calibration: facepi liveness calibrate)")
    from facepi.identity import liveness as decide
    from facepi.vision.liveness import LivenessModel

    cal = decide.load_or_default(str(args.classifier_file), args.camera_id)
    model = LivenessModel.load(args.models, threads=max(args.threads, 1))
    cal.check_models(model.files)
    if not cal.calibrated:
        print(f"facepi: note: {cal.describe()}", file=sys.stderr)
    return model, cal


def check_lines(gallery: str) -> tuple[list[str], dict[str, Any]]:
    """``gallery check``: each camera's liveness calibration, or that there is none and what happens."""
    from facepi.identity import liveness as decide

    cals = decide.all_calibrations(gallery)
    if not cals:
        return ([f"liveness: no camera calibrated; each camera uses the model's own rule (live when P(live) >= "
                 f"{decide.UNCALIBRATED}) until 'facepi liveness calibrate FRAMES --camera-id ID'"],
                {"calibrated": {}, "uncalibrated_rule": decide.UNCALIBRATED})
    lines = ["liveness: " + c.describe() for c in cals.values()]
    lines.append(f"liveness: other cameras use the model's own rule (P(live) >= {decide.UNCALIBRATED}) "
                 "until calibrated")
    return lines, {"calibrated": {k: c.to_json() for k, c in cals.items()}, "uncalibrated_rule": decide.UNCALIBRATED}
