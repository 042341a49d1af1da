#!/usr/bin/env bash
# The aarch64 check: facepi installed on an emulated Raspberry Pi-like Debian the way a Pi owner does it
# (scripts/install-pi.sh with the built wheel), then the same photos through facepi on aarch64 and here,
# compared. Run by scripts/test.sh (so by CI); also alone:   sudo scripts/test-arm64.sh [bookworm|trixie]
#
# How: a Debian arm64 root made by debootstrap (cached in ~/.cache/facepi/arm64/<release>; ~5 min once),
# entered with chroot; the kernel runs its aarch64 binaries through qemu-user-static via binfmt_misc
# (QEMU_CPU=cortex-a72: a Pi 4's CPU). ai-edge-litert's bundled cpuinfo library crashes under qemu on
# the host's x86 /proc/cpuinfo ("uncaught target signal 11" in CreateWrapperFromFile): a Pi 4's
# /proc/cpuinfo is bind-mounted over the root's. Anyone building arm64 images under emulation hits this.
# Skips (exit 0, a clear message) only where this machine cannot run binfmt_misc or chroot.
set -euo pipefail
cd "$(dirname "$0")/.."
release=${1:-bookworm}
cache=${FACEPI_CACHE:-$HOME/.cache/facepi}
root=$cache/arm64/$release
skip() { echo "test-arm64: SKIP ($release): $*" >&2; exit 0; }
say() { echo "test-arm64 ($release): $*" >&2; }
[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot, mount)"

need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
if ((${#need[@]})); then
  say "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
    || skip "cannot install ${need[*]}"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || skip "cannot mount binfmt_misc"
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 \
  || skip "cannot register qemu-aarch64 with binfmt_misc"

if [ ! -e "$root/.facepi-root" ]; then
  say "making the arm64 root (debootstrap under qemu, once)"
  rm -rf "$root.tmp"
  mkdir -p "$(dirname "$root")"
  debootstrap --arch=arm64 --variant=minbase \
    --include=python3,python3-venv,python3-pip,python3-numpy,ca-certificates,systemd,adduser,procps \
    "$release" "$root.tmp" http://deb.debian.org/debian >"$cache/arm64/debootstrap-$release.log" 2>&1 \
    || { tail -5 "$cache/arm64/debootstrap-$release.log" >&2; exit 1; }
  rm -rf "$root" && mv "$root.tmp" "$root" && touch "$root/.facepi-root"
fi
chroot "$root" /bin/true 2>/dev/null || skip "this kernel cannot run the arm64 root's binaries (binfmt_misc)"
# what every Raspberry Pi OS has and a minbase root lacks (/bin/kill: the unit's ExecReload)
[ -x "$root/bin/kill" ] || chroot "$root" sh -c 'apt-get update -qq && apt-get install -y -qq procps >/dev/null'

# A Raspberry Pi 4's /proc/cpuinfo (4x Cortex-A72), for ai-edge-litert's cpuinfo under qemu.
cpuinfo=$cache/arm64/cpuinfo-pi4
if [ ! -e "$cpuinfo" ]; then
  for i in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n' "$i"
    printf 'CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
  done >"$cpuinfo"
  printf 'Hardware\t: BCM2835\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n' >>"$cpuinfo"
fi

mounted=()
work=""
cleanup() {
  for ((i=${#mounted[@]}-1; i>=0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
  [ -z "$work" ] || rm -rf "$work"  # also when a check failed
}
trap cleanup EXIT
bind() { mkdir -p "$2"; mount "${@:3}" --bind "$1" "$2"; mounted+=("$2"); }
mount -t proc proc "$root/proc"; mounted+=("$root/proc")
touch "$root/proc/cpuinfo" 2>/dev/null || true
mount --bind "$cpuinfo" "$root/proc/cpuinfo"; mounted+=("$root/proc/cpuinfo")
bind /dev "$root/dev"
bind /sys "$root/sys" -o ro
mkdir -p "$cache/arm64/pip-cache"
bind "$cache/arm64/pip-cache" "$root/root/.cache/pip"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# this machine's CA bundle (a TLS-inspecting proxy's CA included): pip in the root trusts what pip here trusts
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/facepi-host-ca.crt"

# The wheel, built here, installed there by the Pi install script.
work=$(mktemp -d)
.venv/bin/python -m pip wheel -q --disable-pip-version-check --no-deps . -w "$work"
src=$root/tmp/facepi-src
rm -rf "$src" && mkdir -p "$src"
cp -r scripts systemd tests/arch_probe.py "$work"/facepi-*.whl "$src/"
faces=$(.venv/bin/python -c 'from facepi_convert import sources; print(sources.celebrity_faces(sources.cache_dir()))')
people=(ben_afflek elton_john madonna)
mkdir -p "$src/train" "$src/val"
for p in "${people[@]}"; do
  mkdir -p "$src/train/$p" "$src/val/$p"
  find "$faces/train/$p" -name '*.jpg' | sort | head -4 | xargs -I{} cp {} "$src/train/$p/"
  find "$faces/val/$p" -name '*.jpg' | sort | head -2 | xargs -I{} cp {} "$src/val/$p/"
done
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  QEMU_CPU=cortex-a72 PIP_CERT=/etc/ssl/certs/facepi-host-ca.crt "$@"; }

start=$(date +%s)
say "scripts/install-pi.sh --wheel (under qemu)"
in_root /tmp/facepi-src/scripts/install-pi.sh --wheel "/tmp/facepi-src/$(basename "$work"/facepi-*.whl)" --no-start
say "installed in $(( $(date +%s) - start )) s; /opt/facepi/venv is $(du -sm "$root/opt/facepi/venv" | cut -f1) MB"

# The install's promises, checked from outside the script that made them.
in_root sh -c 'test -x /opt/facepi/venv/bin/facepi && test -e /etc/systemd/system/facepi.service \
  && test -e /etc/systemd/system/facepi@.service && test -e /etc/facepi/facepi.toml && test "$(stat -c %a /etc/facepi/facepi.env)" = 600 \
  && test "$(stat -c %U:%a /var/lib/facepi)" = facepi:750 && id -nG facepi | grep -qw video' \
  || { say "FAIL: the install left files, modes or the user wrong"; exit 1; }
in_root systemd-analyze verify /etc/systemd/system/facepi.service /etc/systemd/system/facepi@.service
in_root /opt/facepi/venv/bin/facepi check-config --config /etc/facepi/facepi.toml >/dev/null
# an apt package built against apt's numpy (PyWavelets, as picamera2's simplejpeg is on Raspberry Pi OS)
# imports in the venv: pip did not shadow apt's numpy
in_root sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pywt >/dev/null'
in_root /opt/facepi/venv/bin/python -c 'import numpy, pywt; assert numpy.__file__.startswith("/usr/lib/python3/"), numpy.__file__; print("test-arm64: venv numpy", numpy.__version__, "from apt; pywt", pywt.__version__, "imports")'
if in_root /usr/bin/python3 -c 'import numpy, sys; sys.exit(numpy.__version__ >= "2")'; then
  # the control: the old install way (a --system-site-packages venv, plain pip) must break the same import,
  # or the check above proves nothing
  in_root sh -c 'rm -rf /tmp/naive && python3 -m venv --system-site-packages /tmp/naive &&
    /tmp/naive/bin/pip install -q --disable-pip-version-check /tmp/facepi-src/facepi-*.whl'
  if in_root /tmp/naive/bin/python -c 'import pywt' 2>"$work/naive.err"; then
    say "FAIL: the control (plain pip, numpy 1.x apt) did not break pywt: the check cannot see the trap"; exit 1
  fi
  say "control: plain pip put $(in_root /tmp/naive/bin/python -c 'import numpy; print("numpy", numpy.__version__)' \
    2>/dev/null) in the venv and apt's pywt fails: $(grep -E 'Error|error' "$work/naive.err" | tail -1)"
  in_root rm -rf /tmp/naive
fi
say "install-pi.sh again, from a checkout (an upgrade must be a no-op for config and state)"
echo '# edited by the owner' >>"$root/etc/facepi/facepi.toml"
checkout=$root/tmp/facepi-checkout
rm -rf "$checkout" && mkdir -p "$checkout"
git ls-files -z | tar --null -T - -cf - | tar -C "$checkout" -xf -  # the tracked tree, as a user's clone has it
in_root /tmp/facepi-checkout/scripts/install-pi.sh --no-start --instance back_door
grep -q '# edited by the owner' "$root/etc/facepi/facepi.toml" || { say "FAIL: the upgrade overwrote the config"; exit 1; }
# a second camera (facepi@back_door): its own config with its own camera_id, its own 0600 env file
grep -qx 'camera_id = "back_door"' "$root/etc/facepi/back_door.toml" \
  && [ "$(stat -c %a "$root/etc/facepi/back_door.env")" = 600 ] \
  || { say "FAIL: --instance back_door did not write back_door.toml / back_door.env"; exit 1; }
# pip builds a source tree in place: run as root, the build must happen in a copy, not in the user's checkout
left=$(find "$checkout" -maxdepth 2 \( -name build -o -name '*.egg-info' \) -print)
[ -z "$left" ] || { say "FAIL: install-pi.sh left build output in the checkout: $left"; exit 1; }
in_root /opt/facepi/venv/bin/facepi --version >&2
rm -rf "$checkout"

# The same photos here and there.
say "facepi models / detect / train / classify on aarch64"
in_root sh -c 'cd / && /opt/facepi/venv/bin/facepi models' >&2
in_root sh -c 'cd /tmp/facepi-src && /opt/facepi/venv/bin/python arch_probe.py val/*/*.jpg' >"$work/arm64.json"
(cd "$src" && "$OLDPWD/.venv/bin/python" arch_probe.py val/*/*.jpg) >"$work/x86.json"
.venv/bin/python tests/arch_probe.py --compare "$work/x86.json" "$work/arm64.json" | tee "$work/compare.json" >&2 \
  || { say "FAIL: aarch64 and x86 disagree"; exit 1; }
in_root /opt/facepi/venv/bin/facepi train /tmp/facepi-src/train /tmp/facepi-src/gallery.npz >/dev/null 2>&1
in_root /opt/facepi/venv/bin/facepi classify /tmp/facepi-src/val /tmp/facepi-src/gallery.npz --json >"$work/arm-names.json"
.venv/bin/facepi train "$src/train" "$work/gallery.npz" >/dev/null 2>&1
.venv/bin/facepi classify "$src/val" "$work/gallery.npz" --json >"$work/x86-names.json"
.venv/bin/python - "$work/x86-names.json" "$work/arm-names.json" <<'EOF'
import json, sys
names = [{r["path"].rsplit("/", 1)[-1]: r["name"] for r in json.load(open(f))["results"]} for f in sys.argv[1:]]
assert names[0] == names[1], names
print(f"test-arm64: train + classify give the same names on x86 and aarch64 ({len(names[0])} photos)", file=sys.stderr)
EOF
# the daemon itself (capture thread, tracker, stdout publisher) on aarch64: a folder of the val photos
mkdir -p "$src/door" && cp "$src"/val/*/*.jpg "$src/door/"
in_root sh -c 'cd / && /opt/facepi/venv/bin/facepi run --source /tmp/facepi-src/door \
  --classifier /tmp/facepi-src/gallery.npz --fast 2>/dev/null' >"$work/arm-events.json"
.venv/bin/facepi run --source "$src/door" --classifier "$work/gallery.npz" --fast 2>/dev/null >"$work/x86-events.json"
.venv/bin/python - "$work/x86-events.json" "$work/arm-events.json" <<'EOF'
import json, sys
names = [sorted(json.loads(line)["name"] for line in open(f)) for f in sys.argv[1:]]
assert names[0] == names[1] and names[0], names
print(f"test-arm64: facepi run announces the same {len(names[0])} events on x86 and aarch64: {names[1]}",
      file=sys.stderr)
EOF
say "OK in $(( $(date +%s) - start )) s"
