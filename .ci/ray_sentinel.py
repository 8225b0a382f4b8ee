"""A Ray head standing in for a user's cluster while the test suite runs.

``start`` launches ``ray start --head --block`` in its own process group (default temp dir,
as a user would) and records its pid and port; ``check`` fails unless that head is still
alive and answering on its port; ``stop`` ends exactly that process group. The tests must
start and stop only their own Ray processes, so a cluster running before ``make test``
survives it. If the sentinel cannot start at all (a machine without room for a second Ray),
``start`` says so and ``check`` is skipped rather than failing CI for an unrelated reason.
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

STATE_FILE = Path("/tmp/evolstm-ray-sentinel")  # "<pid> <port>"
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    from evolstm.errors import ConfigError
    from evolstm.rollouts.ray_evaluator import check_reachable

    try:
        check_reachable(f"127.0.0.1:{port}", timeout=3)
        return True
    except ConfigError:
        return False


def start() -> int:
    port = _free_port()
    cmd = [str(RAY), "start", "--head", "--block", f"--port={port}", "--num-cpus=1"]
    cmd += ["--include-dashboard=false", "--disable-usage-stats"]
    head = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    STATE_FILE.write_text(f"{head.pid} {port}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and head.poll() is None:
        if _answers(port):
            print(f"sentinel Ray head up on port {port} (pid {head.pid})")
            return 0
        time.sleep(1)
    print("warning: the sentinel Ray head did not come up; its check is skipped", file=sys.stderr)
    stop()
    return 0


def check() -> int:
    if not STATE_FILE.exists():
        print("no sentinel Ray head was started; nothing to check")
        return 0
    pid, port = (int(x) for x in STATE_FILE.read_text().split())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        print(f"the sentinel Ray head (pid {pid}) was killed by the tests", file=sys.stderr)
        return 1
    if not _answers(port):
        print(f"the sentinel Ray head no longer answers on port {port}", file=sys.stderr)
        return 1
    print("the sentinel Ray head survived the test suite")
    return 0


def stop() -> int:
    if STATE_FILE.exists():
        group = int(STATE_FILE.read_text().split()[0])
        for sig in (signal.SIGTERM, signal.SIGKILL):  # gcs_server ignores SIGTERM at times
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
            time.sleep(3)
        STATE_FILE.unlink()
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(5)
    sys.exit({"start": start, "check": check, "stop": stop}[sys.argv[1]]())
