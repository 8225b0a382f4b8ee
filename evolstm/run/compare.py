"""Side-by-side comparisons: every variant of a base config, once per seed, in one folder.

The compare file, and how it becomes one config per (variant, seed):
:mod:`evolstm.run.compare_file`.

With ``parallel`` (the default) every run is a Ray task of one CPU, so as many run at once as
the Ray cluster has CPUs: an embedded local Ray unless ``--ray-address`` names a cluster. Each
such run evaluates its population in-process (its ``ray.address`` is set to null; the runs are
the unit of parallelism) and logs no console progress. ``parallel: false`` runs them one after
another in this process through :func:`evolstm.run.trainer.train`, each with its own
``ray.address`` (which ``--ray-address`` then overrides).

Runs go into ``runs/<name>-<timestamp>/``, which also receives ``compare.json`` (rewritten
after every run, so a crash or Ctrl-C keeps the finished runs' results): per variant its
``label``, ``agent``, ``seeds``, ``runs`` (one entry per finished or failed seed: ``seed``,
``run_dir``, ``summary`` and ``worker`` (host, pid, start and end time), or ``error``),
``eval_return_mean`` (``mean``/``std`` over the finished seeds, population std),
``env_steps_mean``, ``wall_time_mean``, ``solved`` (count; ``null`` when the task has no
threshold), ``finished`` and ``statistics`` (:mod:`evolstm.run.compare_report`); and ``pairs``
(the significance tests). When every run has ended it also receives ``compare.md``,
``compare.png`` and ``compare.csv`` (see :mod:`evolstm.run.compare_report`).
"""

from __future__ import annotations

import json
import statistics
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from evolstm.errors import ConfigError
from evolstm.run.checkpoint import atomic_write_text
from evolstm.run.compare_file import Comparison, PlannedRun, load_comparison
from evolstm.run.config import RunConfig, check_ray_address

# load_comparison lives with the compare file; it stays importable here, next to
# run_comparison, which takes what it returns (as since 0.1.0).
__all__ = ["COMPARE_REPORT", "aggregate", "load_comparison", "run_comparison", "train_one"]

COMPARE_REPORT = "compare.json"


def aggregate(label: str, agent: str, seeds: list[int], runs: list[dict]) -> dict[str, Any]:
    """One variant's entry of ``compare.json`` from its ``runs`` (``{"seed", "run_dir",
    "summary"}`` or ``{"seed", "error"}``); statistics over the finished runs only."""
    summaries = [run["summary"] for run in runs if "summary" in run]
    returns = [float(s["eval_return_mean"]) for s in summaries]
    solved_flags = [s.get("solved") for s in summaries]
    known = [flag for flag in solved_flags if flag is not None]
    return {
        "label": label,
        "agent": agent,
        "seeds": seeds,
        "runs": runs,
        "finished": len(summaries),
        "eval_return_mean": {
            "mean": statistics.fmean(returns) if returns else None,
            "std": statistics.pstdev(returns) if returns else None,
        },
        "env_steps_mean": statistics.fmean(s["env_steps"] for s in summaries)
        if summaries
        else None,
        "wall_time_mean": statistics.fmean(s["wall_time"] for s in summaries)
        if summaries
        else None,
        "solved": sum(bool(flag) for flag in known) if known else None,
    }


def _write_report(path: Path, report: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def train_one(cfg: RunConfig, runs_root: str, ray_address: str | None) -> dict[str, Any]:
    """One (variant, seed) run, in whichever process calls it (a Ray task or this one):
    ``{"run_dir", "summary", "worker": {"host", "pid", "started", "ended"}}``."""
    import os
    import socket
    import time

    from evolstm.run.trainer import SUMMARY_FILE, train

    started = time.time()
    run_dir = train(cfg, ray_address=ray_address, runs_root=Path(runs_root))
    return {
        "run_dir": str(run_dir),
        "summary": json.loads((run_dir / SUMMARY_FILE).read_text()),
        "worker": {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": started,
            "ended": time.time(),
        },
    }


def _error_text(err: BaseException) -> str:
    cause = getattr(err, "cause", None)  # a RayTaskError carries the task's own exception
    err = cause if isinstance(cause, BaseException) else err
    first = str(err).strip().splitlines()
    return f"{type(err).__name__}: {first[0] if first else ''}"


def run_comparison(
    comparison: Comparison,
    *,
    ray_address: str | None = None,
    runs_root: Path = Path("runs"),
    console: Console | None = None,
) -> Path:
    """Train every planned run (in parallel Ray tasks, or in turn when the comparison is not
    ``parallel``); write ``compare.json`` and, at the end, ``compare.md``/``.png``/``.csv``;
    return the comparison folder.

    A run that raises an ordinary exception is recorded with its error and the others go
    on; a :class:`ConfigError` (in-process runs) or ``KeyboardInterrupt`` stops the
    comparison after writing ``compare.json`` with what has finished (parallel tasks still
    running are cancelled).

    :param ray_address: parallel: where the Ray tasks run (``None``/``"local"``: an embedded
        local Ray; ``"auto"``, ``"ray://..."``, ``host:port``: a cluster). In turn: overrides
        every run's ``ray.address``.
    :param runs_root: where the comparison folder is created.
    """
    try:
        check_ray_address(ray_address)
    except ValueError as err:
        raise ConfigError(f"ray address {ray_address!r}: {err}") from None
    from evolstm.run.run_dir import new_run_dir

    console = console or Console()
    folder = new_run_dir(Path(runs_root), comparison.name)
    results: dict[str, dict[int, dict]] = {label: {} for label in comparison.runs}

    def report() -> dict[str, Any]:
        return {
            "name": comparison.name,
            "compare_file": str(comparison.source),
            "seeds": comparison.seeds,
            "parallel": comparison.parallel,
            "variants": [
                aggregate(
                    label,
                    planned[0].cfg.agent.name,
                    comparison.seeds,
                    [results[label][s] for s in comparison.seeds if s in results[label]],
                )
                for label, planned in comparison.runs.items()
            ],
        }

    def record(run: PlannedRun, outcome: dict[str, Any]) -> None:
        results[run.label][run.seed] = {"seed": run.seed, **outcome}
        _write_report(folder / COMPARE_REPORT, report())

    _write_report(folder / COMPARE_REPORT, report())
    planned = [run for runs in comparison.runs.values() for run in runs]
    if comparison.parallel:
        _run_on_ray(planned, folder, ray_address, record, console, comparison.name)
    else:
        _run_in_turn(planned, folder, ray_address, record, console, comparison.name)
    final = report()
    from evolstm.run.compare_report import comparison_table, write_outputs
    from evolstm.run.trainer import env_factory_for

    first = next(iter(comparison.runs.values()))[0].cfg
    write_outputs(
        folder,
        final,
        name=comparison.name,
        task=first.env.id,
        threshold=env_factory_for(first).reward_threshold,
        seeds=comparison.seeds,
    )
    _write_report(folder / COMPARE_REPORT, final)
    console.print(comparison_table(final))
    console.print(
        f"comparison folder {folder} (compare.md, compare.png, compare.csv)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return folder


def _say(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _run_in_turn(planned, folder, ray_address, record, console, name) -> None:
    from evolstm.run import trainer  # looked up at call time (tests replace trainer.train)

    for done, run in enumerate(planned, start=1):
        _say(console, f"[{done}/{len(planned)}] {name}: variant {run.label}, seed {run.seed}")
        try:
            outcome = _train_here(trainer, run.cfg, folder, ray_address)
        except ConfigError:
            raise
        except Exception as err:
            traceback.print_exc(file=sys.stderr)
            outcome = {"error": f"{type(err).__name__}: {err}"}
        record(run, outcome)


def _train_here(trainer_module: Any, cfg: RunConfig, folder: Path, ray_address: str | None):
    from evolstm.run.trainer import SUMMARY_FILE

    run_dir = trainer_module.train(cfg, ray_address=ray_address, runs_root=folder)
    return {"run_dir": str(run_dir), "summary": json.loads((run_dir / SUMMARY_FILE).read_text())}


def _run_on_ray(planned, folder, ray_address, record, console, name) -> None:
    import ray

    from evolstm.rollouts.ray_evaluator import connect_ray

    owns_ray = connect_ray(ray_address)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        where = ray.get_runtime_context().gcs_address
        _say(
            console,
            f"{name}: {len(planned)} runs as Ray tasks on {where} "
            f"(up to {min(cpus, len(planned))} at once, {cpus} CPUs)",
        )
        task = ray.remote(num_cpus=1, max_retries=0)(train_one)
        pending = {task.remote(run.cfg, str(folder.resolve()), None): run for run in planned}
        done = 0
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                run = pending.pop(ready[0])
                done += 1
                try:
                    outcome = ray.get(ready[0])
                    verdict = f"eval return {outcome['summary']['eval_return_mean']:.4g}"
                except Exception as err:
                    outcome = {"error": _error_text(err)}
                    verdict = f"failed: {outcome['error']}"
                    print(f"{run.cfg.name}: {outcome['error']}", file=sys.stderr)
                _say(
                    console,
                    f"[{done}/{len(planned)}] {name}: variant {run.label}, seed {run.seed}: "
                    + verdict,
                )
                record(run, outcome)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if owns_ray and ray.is_initialized():
            ray.shutdown()
