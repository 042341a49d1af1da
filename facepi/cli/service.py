"""The door service: run, demo, check-config."""

from __future__ import annotations

import argparse
import sys

from facepi.cli import shared


def check_config(args: argparse.Namespace) -> int:
    """The effective configuration as TOML (it loads back as the same configuration), and where it came from."""
    from facepi import config

    cfg = shared.load_config(args)
    path = shared.config_path(args)
    if path.exists():
        origin = f"{path}, then FACEPI_* environment"
    else:
        origin = f"no config file ({path} not found): built-in defaults, then FACEPI_* environment"
    print(f"# {origin}")
    print(config.describe(cfg))
    problems, notes = _files(cfg)
    for n in notes:
        print(f"facepi: note: {n}", file=sys.stderr)
    if problems:
        for p in problems:
            print(f"facepi: error: {p}", file=sys.stderr)
        print(f"configuration NOT OK ({origin}): fix the above", file=sys.stderr)
        return 2
    print(f"configuration OK ({origin})", file=sys.stderr)
    return 0


def _files(cfg) -> tuple[list[str], list[str]]:
    """What the configuration names on disk, looked at without opening a camera or the broker: the source
    (a video file, image folder or device that is not there fails) and the gallery (none yet is said, not
    failed: a fresh install has none until someone is enrolled)."""
    from pathlib import Path

    from facepi.door.sources import SourceError, check_uri
    from facepi.identity.gallery import db_path

    problems, notes = [], []
    try:
        check_uri(cfg.source.uri)
    except SourceError as e:
        problems.append(f"source.uri: {e}")
    gallery = Path(cfg.recognition.gallery)
    if not db_path(gallery).exists() and not gallery.exists():
        folder = "" if gallery.parent.is_dir() else f" (nor its folder {gallery.parent}: make it first)"
        notes.append(f"recognition.gallery: no gallery yet at {gallery}{folder}: enrol someone first "
                     f"(facepi enroll NAME PHOTOS --gallery {gallery})"
                     + ("; the household's doors fill it" if cfg.household.id else ""))
    return problems, notes


def run(args: argparse.Namespace) -> int:
    import logging

    from facepi.door.daemon import Daemon
    from facepi.redact import MaskingFilter

    cfg = shared.load_config(args)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(MaskingFilter())  # camera logins never reach the journal, whoever logs them
    logging.basicConfig(level=cfg.log_level.upper(), handlers=[handler],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    daemon = Daemon(cfg)
    daemon.install_signals()
    return daemon.run()


def demo(args: argparse.Namespace) -> int:
    from facepi.demo import prepare

    video, gallery = prepare(log=lambda m: print(m, file=sys.stderr))
    args.source, args.classifier = str(video), str(gallery)
    broker = (f" --mqtt-host {args.mqtt_host}" if args.mqtt_host else "") + \
        (f" --mqtt-port {args.mqtt_port}" if args.mqtt_port else "")
    print(f"demo: facepi run --source {video} --gallery {gallery}{broker}", file=sys.stderr)
    return run(args)


def web(args: argparse.Namespace) -> int:
    """The household's page (facepi.web): the configuration without any credential of the camera or the
    broker, the password from FACEPI_WEB_PASSWORD or the systemd credential web_password (none: refused)."""
    import logging

    from facepi import config
    from facepi.redact import MaskingFilter
    from facepi.web.auth import Password

    cfg = config.load(shared.config_path(args), require_file=args.config is not None, secrets=False,
                      overrides={"web.listen": args.listen})
    password = Password.from_environment()
    try:
        from facepi.web.app import serve
    except ImportError as e:
        raise ValueError(f"facepi web needs aiohttp, the web extra: pip install 'facepi[web]' ({e})") from None

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(MaskingFilter())
    logging.basicConfig(level=cfg.log_level.upper(), handlers=[handler],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import os

    return serve(cfg, password, args.gallery or os.environ.get("FACEPI_GALLERY") or None)
