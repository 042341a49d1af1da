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
    print(f"configuration OK ({origin})", file=sys.stderr)
    return 0


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
    print(f"demo: facepi run --source {video} --classifier {gallery}"
          f"{' --mqtt-host ' + args.mqtt_host if args.mqtt_host else ''}", file=sys.stderr)
    return run(args)
