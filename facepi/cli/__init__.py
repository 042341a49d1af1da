"""``facepi``: the on-device command line. A thin layer over the library API.

Exit codes: 0 all went well; 1 the run finished but something failed (a photo
without a face, an unreadable file); 2 the command could not run (bad
arguments, missing or mismatched models, unreadable gallery, an enrolment
refused); 3 (enroll) the person was enrolled, but photos a check found doubtful
(several faces, far from the others, somebody else's) were skipped and named.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facepi import __version__
from facepi.cli import family, photos, service, shared
from facepi.cli.ha import add_ha_parser
from facepi.cli.liveness import add_liveness_parser
from facepi.cli.shared import DEFAULT_GALLERY
from facepi.vision import runtime


def shared_options(nested: bool = False) -> tuple[argparse.ArgumentParser, ...]:
    """The options several commands share: (common, gallery, visitor store).

    ``nested``: for a subcommand of a subcommand (facepi visitors name ...). Its defaults are
    SUPPRESS, so that an option given before it (facepi visitors --store F name V2 x) is kept,
    not overwritten by the inner parser's default."""
    def default(value: object) -> object:
        return argparse.SUPPRESS if nested else value

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models", type=Path, default=default(None), help="models folder (default: bundled models/)")
    common.add_argument("--embedder", default=default(None),
                        help="embedding model file in the manifest, e.g. facenet_float32.tflite "
                             "(default: the manifest's default_embedder)")
    common.add_argument("--threads", type=int, default=default(0),
                        help="TFLite threads (default 0: the cores this process may use, at most 4)")
    common.add_argument("--minsize", type=int, default=default(20), help="smallest face in pixels (default: 20)")
    gal = argparse.ArgumentParser(add_help=False)
    gal.add_argument("--gallery", type=Path, default=default(None),
                     help=f"gallery file (default: $FACEPI_GALLERY, else [recognition] gallery in the config, "
                          f"else {DEFAULT_GALLERY})")
    gal.add_argument("--config", type=Path, default=default(None),
                     help="TOML config to take the gallery and [learning] path from (default: "
                          "/etc/facepi/facepi.toml if it exists)")
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--store", default=default(None),
                       help="an earlier visitors.npz to import (default: [learning] path in the config; "
                            "visitors now live in the gallery's database)")
    return common, gal, store


def build_parser() -> argparse.ArgumentParser:
    common, gal, store = shared_options()
    fit = argparse.ArgumentParser(add_help=False)
    fit.add_argument("--classifier", choices=("centroid", "svm"), default=None,
                     help="centroid (default) or svm; on an existing gallery: changes it")
    fit.add_argument("--target-far", type=float, default=None,
                     help="share of strangers that may be named as someone (default: 0.01); "
                          "on an existing gallery: changes it")
    fit.add_argument("--mode", choices=("crop", "landmarks"), default=None,
                     help="alignment (default: what the model's manifest entry says)")

    p = argparse.ArgumentParser(prog="facepi", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"facepi {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    models = sub.add_parser("models", parents=[common], help="list the models: intact, and what each runs on")
    models.add_argument("--json", action="store_true", help="one JSON object")
    models.set_defaults(func=photos.models)

    d = sub.add_parser("detect", parents=[common], help="faces MTCNN finds in photos, as JSON lines")
    d.add_argument("images", nargs="+", type=Path)
    d.set_defaults(func=photos.detect)

    a = sub.add_parser("align", parents=[common], help="align a dataset like the seed's align_dataset_mtcnn.py")
    a.add_argument("input_dir", type=Path)
    a.add_argument("output_dir", type=Path)
    a.add_argument("--image-size", type=int, default=None,
                   help="crop size (default: the embedding model's, e.g. 160 FaceNet, 112 MobileFaceNet)")
    a.add_argument("--margin", type=int, default=None, help="crop mode margin (default: the model's, 32 FaceNet)")
    a.add_argument("--mode", choices=("crop", "landmarks"), default=None,
                   help="alignment (default: the model's: crop for FaceNet, landmarks for MobileFaceNet)")
    a.add_argument("--detect-multiple-faces", action="store_true")
    a.set_defaults(func=photos.align)

    t = sub.add_parser("train", parents=[common, fit], help="build a gallery + classifier from folders")
    t.add_argument("data_dir", type=Path)
    t.add_argument("classifier_file", type=Path)
    t.set_defaults(func=photos.train)

    c = sub.add_parser("classify", parents=[common], help="classify photos with a gallery")
    c.add_argument("data_dir", type=Path)
    c.add_argument("classifier_file", type=Path)
    c.add_argument("--json", action="store_true")
    c.add_argument("--liveness", action="store_true",
                   help="also judge each face live or not (a photo, a screen) by --camera-id's calibration; "
                        "a face judged not live is never named a member")
    c.add_argument("--camera-id", help="with --liveness: the camera the photos come from")
    c.set_defaults(func=photos.classify)

    e = sub.add_parser("enroll", parents=[common, gal, fit], help="add a person's photos to the gallery")
    e.add_argument("name")
    e.add_argument("photos", nargs="+", type=Path, help="photo files or folders")
    pick = e.add_mutually_exclusive_group()
    pick.add_argument("--face", type=shared.face_number, default=None, metavar="N",
                      help="in a group photo, enrol the Nth face counted from the left (1, 2, ...; a skipped "
                           "group photo prints the path of a preview with the faces numbered)")
    pick.add_argument("--largest-face", action="store_true",
                      help="in a photo with several faces, enrol the largest (default: skip the photo)")
    e.add_argument("--force", action="store_true",
                   help="enrol despite the gallery health checks (look-alike, outlier, several faces)")
    e.add_argument("--verbose", action="store_true",
                   help="also print the rule's evidence: threshold, operating point, margin, leave-one-out")
    e.set_defaults(func=family.enroll)

    gc = sub.add_parser("gallery", help="look after the gallery: facepi gallery check [--sheet FILE.png]")
    gsub = gc.add_subparsers(dest="gallery_command", required=True)
    chk = gsub.add_parser("check", parents=[common, gal],
                          help="per person: photos, spread, outliers, nearest other person; the threshold")
    chk.add_argument("--sheet", type=Path, help="PNG contact sheet of every enrolment crop, problems marked")
    chk.add_argument("--json", action="store_true")
    chk.set_defaults(func=family.gallery_check)
    lg = gsub.add_parser("log", parents=[gal], help="every change to who is family: what, when, from where")
    lg.add_argument("--limit", type=int, default=None)
    lg.add_argument("--json", action="store_true")
    lg.set_defaults(func=family.gallery_log)
    un = gsub.add_parser("undo", parents=[gal], help="restore the gallery as it was before the last change")
    un.set_defaults(func=family.gallery_undo)
    rm = gsub.add_parser("remove", parents=[common, gal], help="remove one photo of a person (numbered as on "
                                                             "the contact sheet)")
    rm.add_argument("name")
    rm.add_argument("photo", type=int, help="the photo's number on 'facepi gallery check --sheet' (1, 2, ...)")
    rm.set_defaults(func=family.gallery_remove)
    rn = gsub.add_parser("rename", parents=[common, gal], help="rename a person")
    rn.add_argument("old")
    rn.add_argument("new")
    rn.set_defaults(func=family.gallery_rename)
    rs = gsub.add_parser("restore", parents=[gal], help="restore a backup (a copy of gallery.db, or an .npz export) "
                                                        "as one change: undoable, never a stale -wal")
    rs.add_argument("backup", type=Path, help="the backup file (.db or .npz)")
    rs.set_defaults(func=family.gallery_restore)
    ex = gsub.add_parser("export", parents=[gal], help="write the gallery as .npz (the seed's format)")
    ex.add_argument("output", type=Path)
    ex.set_defaults(func=family.gallery_export)
    wr = gsub.add_parser("wrong", parents=[common, gal],
                         help="that wasn't NAME: the last recognition of NAME (or PHOTOS) kept as evidence "
                              "against NAME, whose accept distance tightens to exclude it")
    wr.add_argument("name", nargs="?", help="who was wrongly named (optional with --event)")
    wr.add_argument("photos", nargs="*", type=Path, help="photos of who was wrongly named (default: the "
                                                          "daemon's last recognition of NAME)")
    wr.add_argument("--event", type=int, metavar="SEQ",
                    help="the door's event SEQ (its 'seq'; any of the last 50): that recognition, once")
    wr.add_argument("--run", help="the event's 'run' (default: the newest run with that SEQ)")
    wr.add_argument("--force", action="store_true",
                    help="record it even if it looks like NAME themself (recorded in the journal)")
    wr.set_defaults(func=family.gallery_wrong)

    inner = shared_options(nested=True)
    vi = sub.add_parser("visitors", parents=[common, store, gal],
                        help="unknown visitors the daemon kept ([learning]): list, sheet, name, forget")
    vi.add_argument("--json", action="store_true")
    vi.add_argument("--sheet", type=Path, help="PNG of each visitor's best door crops")
    vi.set_defaults(func=family.visitors)
    vsub = vi.add_subparsers(dest="visitors_command")
    vn = vsub.add_parser("name", parents=list(inner), help="enrol a visitor's door crops as NAME")
    vn.add_argument("visitor", help="e.g. V7 (facepi visitors lists them)")
    vn.add_argument("name")
    vn.add_argument("--force", action="store_true", help="enrol despite the gallery health checks")
    vn.set_defaults(func=family.visitors_name)
    vf = vsub.add_parser("forget", parents=list(inner), help="drop a visitor and its crops")
    vf.add_argument("visitor")
    vf.set_defaults(func=family.visitors_forget)

    f = sub.add_parser("forget", parents=[common, gal], help="remove a person from the gallery")
    f.add_argument("name")
    f.set_defaults(func=family.forget)

    pe = sub.add_parser("people", parents=[common, gal], help="who is enrolled")
    pe.add_argument("--json", action="store_true")
    pe.set_defaults(func=family.people)

    ev = sub.add_parser("evaluate", parents=[common],
                        help="open-set quality: enrolled people vs strangers (TAR at FAR, top-1, plot)")
    ev.add_argument("enrolled", type=Path, help="one folder per person (the first --enrol photos are enrolled)")
    ev.add_argument("strangers", type=Path, nargs="?", help="people never enrolled (default: half of ENROLLED, "
                                                          "split by --seed)")
    ev.add_argument("--enrol", type=int, default=5, help="photos enrolled per person (default: 5)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--mode", choices=("crop", "landmarks"), default=None)
    ev.add_argument("--plot", type=Path, help="PNG: score histograms and TAR-FAR curve (needs matplotlib)")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=photos.evaluate)

    v = sub.add_parser("validate-pairs", parents=[common],
                       help="LFW-style verification (pairs.txt, 10 folds) like validate_on_lfw.py")
    v.add_argument("pairs_file", type=Path)
    v.add_argument("image_dir", type=Path)
    v.add_argument("--ext", default="jpg", help="photo extension in IMAGE_DIR (default: jpg)")
    v.add_argument("--mode", choices=("crop", "landmarks"), default=None)
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=photos.validate_pairs)

    conf = argparse.ArgumentParser(add_help=False)
    conf.add_argument("--config", type=Path, default=None,
                      help="TOML config (default: /etc/facepi/facepi.toml if it exists)")
    daemon = argparse.ArgumentParser(add_help=False)  # flags shared by run and demo
    daemon.add_argument("--mqtt-host", help="broker host (none: events as JSON lines on stdout)")
    daemon.add_argument("--mqtt-port", type=int)
    daemon.add_argument("--camera-id")
    daemon.add_argument("--camera-name", help="the Home Assistant device name (default: from the camera id)")
    daemon.add_argument("--fast", action="store_true", help="process a file as fast as possible, not at its pace")
    daemon.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    r = sub.add_parser("run", parents=[conf, daemon], help="the door-camera daemon: recognise and publish")
    r.add_argument("--source", help="camera index, /dev/video*, 'picamera2', RTSP/HTTP URL, video file or folder")
    r.add_argument("--gallery", "--classifier", dest="classifier",
                   help="the gallery (as every other command's --gallery; --classifier is its older name)")
    r.set_defaults(func=service.run)
    dm = sub.add_parser("demo", parents=[conf, daemon], help="the daemon on the bundled demo input (real photos)")
    dm.set_defaults(func=service.demo)
    cc = sub.add_parser("check-config", parents=[conf], help="validate the configuration and print it")
    cc.set_defaults(func=service.check_config)
    wb = sub.add_parser("web", parents=[conf], help="the household's page: people, photos, door events, visitors "
                                                  "(password: FACEPI_WEB_PASSWORD or the credential web_password)")
    wb.add_argument("--listen", help="host:port (default: [web] listen)")
    wb.add_argument("--gallery", help="the gallery (default: [recognition] gallery in the config)")
    wb.set_defaults(func=service.web)
    add_ha_parser(sub)
    add_liveness_parser(sub, common, gal)
    return p


def _errors() -> tuple[type[Exception], ...]:
    """The errors a command says in one line. Imported only when something failed (an except clause's
    tuple is evaluated then): a command that needs neither OpenCV nor the camera's sources (facepi web's
    idle page) does not load them."""
    from facepi.config import ConfigError
    from facepi.door.sources import SourceError
    from facepi.identity.gallery import GalleryError
    from facepi.identity.visitors import VisitorError
    from facepi.vision.images import ImageError

    return GalleryError, ImageError, ConfigError, SourceError, VisitorError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (runtime.ModelError, ValueError, *_errors()) as e:
        from facepi.redact import mask

        print(f"facepi: error: {mask(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # an unwritable folder, a directory where a file was expected, ...
        where = f"{e.filename}: " if e.filename else ""
        print(f"facepi: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
