#!/usr/bin/env bash
# Install or upgrade facepi as a systemd service on Raspberry Pi OS (bookworm or trixie, 64-bit) or Debian.
# Idempotent: run it again to upgrade; your config, env file and gallery are never overwritten.
#
#   sudo scripts/install-pi.sh                      # facepi from this checkout (built, not editable)
#   sudo scripts/install-pi.sh --wheel facepi-*.whl  # or from a built wheel
#   options: --extras svm   (the SVM classifier: +200 MB of scikit-learn/scipy)   --no-start
#            --instance NAME (repeatable: one camera each, run as facepi@NAME from /etc/facepi/NAME.toml)
#
# Why the venv is made this way: picamera2, libcamera and simplejpeg come from apt and are built
# against apt's numpy. The venv sees them (--system-site-packages), and pip is constrained to the
# numpy apt installed, so it never puts a second numpy in the venv that would shadow apt's
# ("numpy.dtype size changed" from simplejpeg, raspberrypi/picamera2#1088). On bookworm (numpy 1.24)
# pip then picks an OpenCV wheel built for numpy 1.x; on trixie (numpy 2.x) the newest one.
set -euo pipefail

PREFIX=/opt/facepi
VENV=$PREFIX/venv
here=$(cd "$(dirname "$0")/.." && pwd)
target=$here
extras=""
start=1
instances=()
while (($#)); do
  case $1 in
    --wheel) target=$(realpath "$2"); shift 2 ;;
    --extras) extras=$2; shift 2 ;;
    --no-start) start=0; shift ;;
    --instance) instances+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "install-pi: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for name in "${instances[@]}"; do  # the instance name is the camera_id: in topics and file names
  [[ $name =~ ^[A-Za-z0-9_-]{1,64}$ ]] || { echo "install-pi: --instance '$name': use 1-64 letters, digits, _ or -" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "install-pi: run as root (sudo)" >&2; exit 2; }
say() { echo "install-pi: $*" >&2; }

# 1. Debian packages. python3-picamera2 exists in Raspberry Pi OS's archive only.
pkgs=(python3-venv python3-pip python3-numpy ca-certificates)
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'; }
if [ -z "$(candidate python3-picamera2)" ] || [ "$(candidate python3-picamera2)" = "(none)" ]; then
  apt-get update -qq || true
fi
picam=$(candidate python3-picamera2)
if [ -n "$picam" ] && [ "$picam" != "(none)" ]; then
  pkgs+=(python3-picamera2)
else
  say "python3-picamera2 is not in this system's apt sources (not Raspberry Pi OS?): the Pi camera source is unavailable, USB/RTSP/files work"
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. The venv, constrained to apt's numpy.
apt_numpy=$(/usr/bin/python3 -c 'import numpy; print(numpy.__version__)')
install -d -m 0755 "$PREFIX"
[ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
printf '# written by install-pi.sh: keep the numpy apt built picamera2/simplejpeg against\nnumpy==%s\n' \
  "$apt_numpy" > "$PREFIX/constraints.txt"
say "installing facepi${extras:+[$extras]} from $target into $VENV (numpy pinned to apt's $apt_numpy)"
if [ -d "$target" ]; then
  # pip builds a source tree in place (build/, facepi.egg-info/): as root that leaves root-owned files in the
  # user's checkout, so build from a throwaway copy (without the venv, git data or earlier build output)
  copy=$(mktemp -d /tmp/facepi-install.XXXXXX)
  trap 'rm -rf "$copy"' EXIT
  tar -C "$target" --exclude=./.venv --exclude=./.git --exclude=./build --exclude='*.egg-info' \
    --exclude=__pycache__ --exclude=.pytest_cache --exclude=.ruff_cache -cf - . | tar -C "$copy" -xf -
  target=$copy
fi
# the web extra (aiohttp) always: facepi-web.service is installed beside the daemon, off until a password is set
extras="web${extras:+,$extras}"
spec="$target[$extras]"
"$VENV/bin/pip" install -q --disable-pip-version-check -c "$PREFIX/constraints.txt" "$spec"
# the same version number again (an upgrade from a newer checkout): replace facepi itself, not its deps
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$target"

# 3. Proof that the install did not shadow apt's numpy (the picamera2 trap), and facepi runs.
"$VENV/bin/python" - "$apt_numpy" <<'EOF'
import sys
import numpy
if not numpy.__file__.startswith("/usr/lib/python3/dist-packages/") or numpy.__version__ != sys.argv[1]:
    sys.exit(f"install-pi: numpy {numpy.__version__} from {numpy.__file__} shadows apt's {sys.argv[1]}")
try:
    import picamera2  # noqa: F401  (where apt has it: its simplejpeg must load against this numpy)
except ImportError as e:
    if "numpy" in str(e) or "dtype" in str(e):
        sys.exit(f"install-pi: picamera2 fails to import: {e}")
except ValueError as e:
    sys.exit(f"install-pi: picamera2 fails to import: {e}")
import cv2  # noqa: F401
import facepi.vision.runtime
print(f"install-pi: numpy {numpy.__version__} (apt's), OpenCV {cv2.__version__}, "
      f"models in {facepi.vision.runtime.models_dir()}", file=sys.stderr)
EOF
(cd / && "$VENV/bin/facepi" models >/dev/null)

# 4. User, folders, config (never overwritten), unit.
getent group video >/dev/null || groupadd --system video
if ! id facepi >/dev/null 2>&1; then
  useradd --system --user-group --groups video --home-dir /var/lib/facepi --shell /usr/sbin/nologin facepi
fi
install -d -o facepi -g facepi -m 0750 /var/lib/facepi
install -d -m 0755 /etc/facepi
if [ ! -e /etc/facepi/facepi.toml ]; then
  install -m 0644 "$here/systemd/facepi.toml.example" /etc/facepi/facepi.toml
  say "wrote /etc/facepi/facepi.toml (edit it: camera, broker)"
fi
if [ ! -e /etc/facepi/facepi.env ]; then
  printf '# FACEPI_MQTT_PASSWORD=...\n# FACEPI_SOURCE_PASSWORD=...\n' | install -m 0600 /dev/stdin /etc/facepi/facepi.env
fi
# facepi@NAME (one camera per instance, /etc/facepi/NAME.toml) beside facepi.service: the same hardening
install -m 0644 "$here/systemd/facepi.service" /etc/systemd/system/facepi.service
install -m 0644 "$here/systemd/facepi@.service" /etc/systemd/system/facepi@.service
install -m 0644 "$here/systemd/facepi-web.service" /etc/systemd/system/facepi-web.service
for name in "${instances[@]}"; do
  if [ ! -e "/etc/facepi/$name.toml" ]; then  # the example, with this camera's id (never overwritten)
    sed -e "s/^camera_id = .*/camera_id = \"$name\"/" -e 's/^camera_name = .*/camera_name = ""/' \
      "$here/systemd/facepi.toml.example" | install -m 0644 /dev/stdin "/etc/facepi/$name.toml"
    say "wrote /etc/facepi/$name.toml (edit it: this camera's [source], the broker)"
  fi
  if [ ! -e "/etc/facepi/$name.env" ]; then
    printf '# this camera only (facepi.env holds what all cameras share)\n# FACEPI_SOURCE_PASSWORD=...\n' \
      | install -m 0600 /dev/stdin "/etc/facepi/$name.env"
  fi
done
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify /etc/systemd/system/facepi.service /etc/systemd/system/facepi@.service \
    /etc/systemd/system/facepi-web.service
fi
"$VENV/bin/facepi" check-config --config /etc/facepi/facepi.toml >/dev/null
for name in "${instances[@]}"; do
  "$VENV/bin/facepi" check-config --config "/etc/facepi/$name.toml" >/dev/null
done

# 5. Enable; start (or restart after an upgrade) once there is a gallery to serve.
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  # one camera: facepi.service; several (--instance): facepi@NAME each, and facepi.service is left alone
  units=(facepi.service)
  ((${#instances[@]})) && units=("${instances[@]/#/facepi@}") && units=("${units[@]/%/.service}")
  systemctl enable "${units[@]}"
  if [ "$start" = 1 ] && { [ -e /var/lib/facepi/gallery.db ] || [ -e /var/lib/facepi/gallery.npz ]; }; then
    systemctl restart "${units[@]}"
    say "${units[*]} (re)started: journalctl -u '${units[0]%.service}' -f"
  fi
  # the page: off until a password is set (its unit's ConditionPathExists says so too)
  if [ -e /etc/facepi/web_password ]; then
    systemctl enable facepi-web.service
    if [ "$start" = 1 ]; then
      systemctl restart facepi-web.service
      say "facepi-web (re)started (docs/web.md)"
    fi
  else
    say "the web page is off until a password is set: sudo install -m 0600 /dev/stdin /etc/facepi/web_password <<< 'PASSPHRASE'; sudo systemctl enable --now facepi-web"
  fi
else
  say "systemd is not running here (a chroot?): unit installed, not enabled"
fi
[ -e /var/lib/facepi/gallery.db ] || [ -e /var/lib/facepi/gallery.npz ] || say "next: sudo -u facepi $VENV/bin/facepi enroll NAME PHOTOS... --gallery /var/lib/facepi/gallery.npz; sudo systemctl start facepi"
say "done"
