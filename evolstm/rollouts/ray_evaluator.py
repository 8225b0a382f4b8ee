"""Population evaluation spread over Ray actors.

Each actor owns a :class:`~evolstm.rollouts.evaluation.PopulationEvaluator` (and so its own vector
env) and evaluates one contiguous shard of the population batched. Member ``p`` meets the
same episode seeds whichever shard it lands in, so fitnesses do not depend on the sharding.

Faults: a shard whose actor dies (``RayActorError``) or does not answer within
``shard_timeout_s`` (a hung env, a stuck node) is re-run on a fresh actor, which replaces
the old one (killed first), so a generation is never lost and its result is the same.

What crosses the wire, per generation and shard: the shard's parameter rows as one float32
numpy array ``[p, D]`` (zero-copy through Ray's object store), the ``E`` episode seeds, the
frozen observation normaliser (two vectors ``[in]``) and a flag; back come the returns and
lengths ``[p, E]``, optional success flags and observation statistics (``[in]`` vectors),
and two timings. No env, policy object or trajectory travels.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from evolstm.errors import ConfigError, EnvError
from evolstm.network.layout import PolicySpec
from evolstm.network.obs_norm import ObsNormalizer
from evolstm.rollouts.evaluation import EvaluationResult, PopulationEvaluator, apply_nan_penalty

if TYPE_CHECKING:
    from evolstm.rollouts.env_factory import EnvFactory

MAX_SHARD_RETRIES = 3
DEFAULT_SHARD_TIMEOUT_S = 600.0
CONNECT_TIMEOUT_S = 5.0
START_TIMEOUT_S = 300.0  # for an actor to start (imports, env); a loaded machine is slow
# The HTTP/2 client preface and an empty SETTINGS frame (RFC 7540, 3.5 and 6.5).
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


class _ShardWorker:
    """The body of a Ray actor: one evaluator with its own vector env."""

    def __init__(self, env_factory: EnvFactory, spec_dict: dict[str, Any]) -> None:
        import envs  # noqa: F401  (registers the built-in tasks inside the worker process)

        self.evaluator = PopulationEvaluator(env_factory, PolicySpec.from_dict(spec_dict))

    def evaluate(
        self, vectors: np.ndarray, seeds: list[int], obs_norm: Any, collect_stats: bool
    ) -> EvaluationResult:
        try:
            return self.evaluator.evaluate_shard(
                torch.from_numpy(vectors), seeds, obs_norm, collect_stats
            )
        except EnvError as err:
            raise err.relocated(0, f"pid {os.getpid()} on {socket.gethostname()}") from None


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _resolve_auto() -> str:
    try:
        from ray._private.services import get_ray_address_from_environment

        return get_ray_address_from_environment("auto", None)
    except ConnectionError:
        raise ConfigError(
            "--ray-address auto: no running Ray cluster found on this machine (start one with "
            "`ray start --head`, set RAY_ADDRESS, or use 'local')"
        ) from None


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (Ray's C++ core logs a failed probe there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _probe_gcs(address: str, timeout: float) -> str | None:
    """One attempt of Ray's own GCS client (``ray.init`` makes 20, a second apart): ``None``
    when a GCS answered, else why not."""
    from ray._raylet import GcsClient

    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            outcome["cluster"] = GcsClient(address=address).cluster_id
        except Exception as err:
            outcome["error"] = f"{type(err).__name__}: {err}"

    with _quiet_stderr():
        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        thread.join(timeout)
    if "cluster" in outcome:
        return None
    return outcome.get("error", f"no answer within {timeout:g} s")


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> str:
    """Fail fast, before ``ray.init`` (which retries for minutes and ignores SIGTERM), when
    nothing that speaks Ray's protocol listens at ``address``: a TCP connect with a short
    timeout, then the HTTP/2 preface that every gRPC server (Ray's GCS and its client server)
    answers with a SETTINGS frame, then (for a GCS address) one request of Ray's GCS client.

    :returns: the concrete address (``"auto"`` resolved).
    :raises ConfigError: one line naming the address, within ``2 * timeout`` seconds.
    """
    resolved = _resolve_auto() if address == "auto" else address
    try:
        host, port = _split_address(resolved)
    except ValueError:
        raise ConfigError(f"--ray-address {address}: expected host:port") from None
    label = address if resolved == address else f"{address} ({resolved})"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_HTTP2_PREFACE)
            answer = sock.recv(9)
    except OSError as err:
        raise ConfigError(
            f"--ray-address {label}: cannot connect ({err.strerror or err}); is a Ray head "
            "running there (`ray start --head`)?"
        ) from None
    not_ray = f"--ray-address {label}: something listens there, but it is not Ray"
    if len(answer) < 4 or answer[3] != 0x04:  # frame type SETTINGS
        raise ConfigError(not_ray)
    if not resolved.startswith("ray://"):
        why = _probe_gcs(f"{host}:{port}", timeout)
        if why is not None:
            raise ConfigError(f"{not_ray} ({why.splitlines()[0][:100]})")
    return resolved


def connect_ray(address: str | None) -> bool:
    """Start or join Ray. ``None``/``"local"``: a new embedded local Ray whose ports bind to
    localhost only, without a dashboard; ``"auto"``, ``"ray://..."`` or ``host:port``: an
    existing cluster (checked with :func:`check_reachable` first). Returns True when this
    call started or joined Ray (and so :meth:`RayEvaluator.close` disconnects)."""
    import ray

    if ray.is_initialized():
        return False
    if address in (None, "local"):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(
            address="local",  # never join a cluster found on the machine
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
            configure_logging=True,
        )
    else:
        check_reachable(address)
        # ray.init retries the GCS once a second, 20 times by default: bound it.
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "8")
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError) as err:
            first = (str(err).strip().splitlines() or [""])[0][:120]
            raise ConfigError(
                f"--ray-address {address}: Ray refused to connect ({first})"
            ) from None
    return True


class RayEvaluator:
    """Splits ``[P, D]`` into shards over ``num_workers`` Ray actors.

    :param env_factory: picklable env builder, shipped to every actor.
    :param spec: the policy every member uses.
    :param num_workers: actors (0: one per CPU Ray reports).
    :param address: where Ray runs (see :func:`connect_ray`).
    :param shard_timeout_s: a shard not back after this many seconds counts as lost: its
        actor is killed and replaced, and the shard re-run.
    """

    def __init__(
        self,
        env_factory: EnvFactory,
        spec: PolicySpec,
        *,
        num_workers: int = 0,
        address: str | None = "local",
        shard_timeout_s: float = DEFAULT_SHARD_TIMEOUT_S,
    ) -> None:
        import ray

        self._owns_ray = connect_ray(address)
        if num_workers <= 0:
            num_workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.num_workers = num_workers
        self.shard_timeout_s = shard_timeout_s
        self.replacements = 0  # actors replaced so far (dead or hung)
        self._args = (env_factory, spec.to_dict())
        self._actor_cls = ray.remote(num_cpus=1, max_restarts=0)(_ShardWorker)
        self.workers = [self._actor_cls.remote(*self._args) for _ in range(num_workers)]
        self._wait_ready(self.workers)

    def _wait_ready(self, workers: list[Any]) -> None:
        """Block until ``workers`` have started (imports, env factory), so that a shard's
        timeout measures its evaluation, not a worker's start-up."""
        import ray

        ray.get([w.__ray_ready__.remote() for w in workers], timeout=START_TIMEOUT_S)

    def _replace(self, i: int) -> None:
        import ray

        ray.kill(self.workers[i], no_restart=True)
        self.workers[i] = self._actor_cls.remote(*self._args)
        self.replacements += 1
        from ray.exceptions import GetTimeoutError

        # A replacement that does not even start counts against the shard's retries.
        with contextlib.suppress(GetTimeoutError):
            self._wait_ready([self.workers[i]])

    def evaluate(
        self,
        vectors: torch.Tensor,
        seeds: Sequence[int],
        *,
        obs_norm: ObsNormalizer | None = None,
        collect_stats: bool = False,
    ) -> EvaluationResult:
        """Evaluate ``vectors [P, D]`` on ``seeds [E]``; shards run in parallel."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        start = time.perf_counter()
        array = torch.as_tensor(vectors, dtype=torch.float32).numpy()
        if array.ndim == 1:
            array = array[None]
        seeds = [int(s) for s in seeds]
        shards = [s for s in np.array_split(np.arange(len(array)), self.num_workers) if s.size]
        args = (seeds, obs_norm, collect_stats)

        def submit(i: int) -> tuple[Any, float]:
            ref = self.workers[i].evaluate.remote(np.ascontiguousarray(array[shards[i]]), *args)
            return ref, time.monotonic()

        pending = {i: submit(i) for i in range(len(shards))}
        results: dict[int, EvaluationResult] = {}
        retries = 0
        while pending:
            by_ref = {ref: i for i, (ref, _) in pending.items()}
            oldest = min(t for _, t in pending.values())
            wait_s = max(0.0, oldest + self.shard_timeout_s - time.monotonic())
            ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=wait_s)
            lost: list[int] = []
            for ref in ready:
                i = by_ref[ref]
                try:
                    results[i] = ray.get(ref, timeout=self.shard_timeout_s)
                    del pending[i]
                except (RayActorError, GetTimeoutError):
                    lost.append(i)
                except RayTaskError as err:
                    if isinstance(err.cause, EnvError):
                        where = f"Ray worker {i} ({err.cause.worker})"
                        raise err.cause.relocated(int(shards[i][0]), where) from None
                    raise
            now = time.monotonic()
            for i, (_, submitted) in pending.items():
                if i not in lost and now - submitted >= self.shard_timeout_s:
                    lost.append(i)  # hung: treated as dead
            for i in lost:
                retries += 1
                if retries > MAX_SHARD_RETRIES * len(shards):
                    raise RuntimeError(
                        f"Ray shard {i} failed {retries} times (dead or hung actors); giving up"
                    )
                self._replace(i)
                pending[i] = submit(i)
        parts = [results[i] for i in range(len(shards))]
        result = apply_nan_penalty(EvaluationResult.concatenate(parts))
        slowest = max(sum(p.timings.values()) for p in parts)
        result.timings["time_ray_s"] = max(0.0, time.perf_counter() - start - slowest)
        return result

    def close(self) -> None:
        import ray

        for worker in self.workers:
            ray.kill(worker)
        self.workers = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
