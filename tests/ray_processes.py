"""A Ray head of the test's own: a child process in its own process group, every port free,
a temp dir of its own, stopped by killing that group (never ``ray stop``, which stops every
Ray on the machine)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

RAY_CLI = Path(sys.executable).with_name("ray")
PORT_OPTIONS = (
    "port",
    "dashboard-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
    "node-manager-port",
    "object-manager-port",
    "ray-client-server-port",
)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on localhost."""
    sockets = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def processes_using(marker: str) -> list[int]:
    """Pids of live processes whose command line mentions ``marker`` (the head's temp dir);
    read from ``/proc`` (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@dataclass
class RayHead:
    address: str  # host:port of the GCS
    dashboard_url: str
    temp_dir: Path
    process: subprocess.Popen


@contextmanager
def ray_head(*, num_cpus: int = 1, dashboard: bool = True) -> Iterator[RayHead]:
    """``ray start --head --block`` as a child in a new session; on exit its whole process
    group is terminated (then killed), its temp dir removed, and nothing it started is
    left (checked by the temp dir in the command lines)."""
    ports = dict(zip(PORT_OPTIONS, free_ports(len(PORT_OPTIONS)), strict=True))
    # Ray's socket paths must stay short: a temp dir right under /tmp.
    temp_dir = Path("/tmp") / f"ray-evolstm-test-{ports['port']}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    command = [str(RAY_CLI), "start", "--head", "--block", f"--num-cpus={num_cpus}"]
    command += [f"--{name}={port}" for name, port in ports.items()]
    command += [f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    command += [f"--include-dashboard={str(dashboard).lower()}", "--dashboard-host=127.0.0.1"]
    log = (Path("/tmp") / f"ray-evolstm-test-{ports['port']}.log").open("w")
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    head = RayHead(
        address=f"127.0.0.1:{ports['port']}",
        dashboard_url=f"http://127.0.0.1:{ports['dashboard-port']}",
        temp_dir=temp_dir,
        process=process,
    )
    try:
        yield head
    finally:
        _stop_group(process)
        log.close()
        leftovers = processes_using(str(temp_dir))
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(temp_dir)], check=False)
        Path(log.name).unlink(missing_ok=True)
        assert not leftovers, f"processes outlived the head's group: {leftovers}"


def wait_until_up(head: RayHead, timeout: float = 90.0) -> None:
    """Block until the head's GCS port accepts connections (raise if the head exits first
    or ``timeout`` seconds pass)."""
    host, port = head.address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        if head.process.poll() is not None:
            raise RuntimeError(f"ray start --head exited with {head.process.returncode}")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the test's Ray head did not come up within {timeout} s"
                ) from None
            time.sleep(0.5)


def _stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        process.poll()
        time.sleep(0.2)
    else:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
