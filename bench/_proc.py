"""Helpers shared by the benchmarks."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def run_with_peak_rss(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, seconds: float | None = None
                      ) -> tuple[subprocess.Popen, str, float, float]:
    """Run a command (SIGTERM after ``seconds`` if given); return (process, stderr, peak RSS in MB, wall seconds).

    Peak RSS is read from the child's own /proc VmHWM while it runs: wait4's
    ru_maxrss would report the (large) benchmark process instead, because a child
    spawned with vfork inherits the parent's high-water mark across exec.
    """
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_kb = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        if seconds is not None and time.perf_counter() - t > seconds:
            proc.terminate()  # the daemon's clean stop: it prints its final status and exits 0
            seconds = None
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.01)
    err = proc.stderr.read() if proc.stderr else ""
    proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return proc, err, peak_kb / 1024, time.perf_counter() - t
