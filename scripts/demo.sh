#!/usr/bin/env bash
# The main job, from a fresh machine: set-up (idempotent, no TensorFlow needed), then the
# door-camera daemon on the bundled demo input: a video made from real photos (four people
# enrolled, a fifth a stranger). With no broker configured, events print as JSON lines.
# It ends with one line of what was seen, and how to run facepi yourself.
#   scripts/demo.sh [--fast] [--mqtt-host localhost] ...   (flags of 'facepi demo')
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh ""
events=$(mktemp)
trap 'rm -f "$events"' EXIT
status=0
.venv/bin/facepi demo "$@" | tee "$events" || status=$?
# One line a household reads: visits, how many were named (and who), how many were strangers.
.venv/bin/python - "$events" "$*" <<'PY' >&2
import json
import sys

events = []
for line in open(sys.argv[1], encoding="utf-8"):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if isinstance(event, dict) and "name" in event:
        events.append(event["name"])
flags = sys.argv[2].split()
def flag(name):
    for i, f in enumerate(flags):
        if f == name and i + 1 < len(flags):
            return flags[i + 1]
        if f.startswith(name + "="):
            return f.split("=", 1)[1]
    return None
if not events and flag("--mqtt-host"):
    where = f" -h {flag('--mqtt-host')}" + (f" -p {flag('--mqtt-port')}" if flag("--mqtt-port") else "")
    print(f"demo: the events went to the MQTT broker (see them with: mosquitto_sub{where} -v -t 'facepi/#')")
else:
    named = [n for n in events if n != "unknown"]
    who = f" ({', '.join(sorted(set(named)))})" if named else ""
    print(f"demo: {len(events)} visit(s): {len(named)} named{who}, {len(events) - len(named)} unknown")
PY
echo "next: run facepi yourself with $PWD/.venv/bin/facepi --help (or: source $PWD/.venv/bin/activate)" >&2
exit "$status"
