"""A Ray head standing in for a user's cluster while the test suite runs.

``start`` launches ``ray start --head --block`` in its own process group (default temp dir,
as a user would) and records its pid; ``check`` fails unless that head is still alive and
answering on its port; ``stop`` ends exactly that process group. The tests must start and
stop only their own Ray processes, so a cluster running before ``make test`` survives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PORT = int(os.environ.get("EVOLSTM_SENTINEL_PORT", "6391"))
PID_FILE = Path("/tmp/evolstm-ray-sentinel.pid")
RAY = Path(sys.executable).with_name("ray")


def _answers() -> bool:
    from evolstm.errors import ConfigError
    from evolstm.ray_evaluator import check_reachable

    try:
        check_reachable(f"127.0.0.1:{PORT}", timeout=3)
        return True
    except ConfigError:
        return False


def start() -> int:
    cmd = [str(RAY), "start", "--head", "--block", f"--port={PORT}", "--num-cpus=1"]
    cmd += ["--include-dashboard=false", "--disable-usage-stats"]
    head = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    PID_FILE.write_text(str(head.pid))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if head.poll() is None and _answers():
            print(f"sentinel Ray head up on port {PORT} (pid {head.pid})")
            return 0
        time.sleep(1)
    print("sentinel Ray head did not come up", file=sys.stderr)
    return 1


def check() -> int:
    pid = int(PID_FILE.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        print(f"the sentinel Ray head (pid {pid}) was killed by the tests", file=sys.stderr)
        return 1
    if not _answers():
        print(f"the sentinel Ray head no longer answers on port {PORT}", file=sys.stderr)
        return 1
    print("the sentinel Ray head survived the test suite")
    return 0


def stop() -> int:
    if PID_FILE.exists():
        group = int(PID_FILE.read_text())
        for sig in (signal.SIGTERM, signal.SIGKILL):  # gcs_server ignores SIGTERM at times
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
            time.sleep(3)
        PID_FILE.unlink()
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(5)
    sys.exit({"start": start, "check": check, "stop": stop}[sys.argv[1]]())
