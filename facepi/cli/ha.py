"""``facepi ha forget CAMERA_ID``: take a camera that is gone off Home Assistant (its retained discovery
configs and state topics cleared on the broker; Home Assistant then removes the device)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_ha_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``facepi ha ...`` on ``sub`` (the subparsers of facepi's parser)."""
    ha = sub.add_parser("ha", help="Home Assistant: facepi ha forget CAMERA_ID (remove a camera that is gone)")
    hsub = ha.add_subparsers(dest="ha_command", required=True)
    f = hsub.add_parser("forget", help="clear a camera's retained discovery configs and state topics on the broker: "
                                       "Home Assistant removes its device")
    f.add_argument("camera_id", help="the camera_id of the camera that is gone, e.g. old_door")
    f.add_argument("--config", type=Path, default=None,
                   help="TOML config with the broker and its login (default: /etc/facepi/facepi.toml if it exists; "
                        "any instance's config will do: only [mqtt] is used)")
    f.add_argument("--mqtt-host", help="broker host (default: the config's mqtt.host)")
    f.add_argument("--mqtt-port", type=int)
    f.add_argument("--dry-run", action="store_true", help="list what would be cleared, clear nothing")
    f.add_argument("--force", action="store_true",
                   help="clear even though the camera is online (it publishes its entities again when it restarts "
                        "or Home Assistant does)")
    f.add_argument("--json", action="store_true", help="one JSON object")
    f.set_defaults(func=run_ha)
    return ha


def run_ha(args: argparse.Namespace) -> int:
    from facepi import config
    from facepi.door.ha_forget import ForgetError, forget_camera

    cfg = config.load(args.config or config.DEFAULT_PATH, require_file=args.config is not None,
                      overrides={"mqtt.host": args.mqtt_host, "mqtt.port": args.mqtt_port})
    try:
        done = forget_camera(cfg, args.camera_id, dry_run=args.dry_run, force=args.force)
    except ForgetError as e:
        print(f"facepi: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"camera": done.camera_id, "cleared": done.cleared, "online": done.online,
                          "dry_run": done.dry_run}))
        return 0
    verb = "would clear" if done.dry_run else "cleared"
    if not done.cleared:
        print(f"nothing retained for camera {done.camera_id} on {cfg.mqtt.host}:{cfg.mqtt.port} (check the camera "
              f"id, mqtt.base_topic and mqtt.discovery_prefix)")
        return 0
    for topic in done.cleared:
        print(f"{verb} {topic}")
    print(f"{verb} {len(done.discovery)} Home Assistant entit{'y' if len(done.discovery) == 1 else 'ies'} and "
          f"{len(done.cleared) - len(done.discovery)} state topic(s) of camera {done.camera_id}"
          f"{'' if done.dry_run else ': Home Assistant removes the device'}")
    return 0
