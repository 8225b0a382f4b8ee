"""One training loop for every agent: budget, held-out evaluation, checkpoints, loggers.

``train(cfg)`` builds the env factory, the policy spec, the evaluator (in-process or Ray)
and the agent named in the config, then calls ``agent.step()`` until the budget is spent.
A run folder ``runs/<name>-<timestamp>/`` receives ``config.yaml``, ``metrics.jsonl``,
``checkpoints/``, ``summary.json`` and ``policy.pt`` (the public contract in DESIGN.md).
"""

from __future__ import annotations

import contextlib
import copy
import json
import pickle
import random
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evolstm.agent import Agent, AgentContext
from evolstm.errors import ConfigError, EnvError, FileFormatError, TrainingDiverged
from evolstm.network.layout import PolicySpec, build_layout
from evolstm.network.obs_norm import ObsNormalizer
from evolstm.network.policy import RecurrentPolicy
from evolstm.rollouts.env_factory import EnvFactory, resolve_env
from evolstm.rollouts.evaluation import EVAL_STREAM, Evaluator, PopulationEvaluator, episode_seeds
from evolstm.rollouts.success import SuccessTests
from evolstm.run.checkpoint import (
    CHECKPOINT_DIR,
    LATEST,
    atomic_write,
    atomic_write_text,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from evolstm.run.config import RunConfig, check_ray_address, resolve_agent
from evolstm.run.loggers import Logger, run_loggers
from evolstm.run.run_dir import (
    check_resumable,
    resume_dir,
    writable_run_dir,
    write_config,
)

SUMMARY_FILE = "summary.json"
POLICY_FILE = "policy.pt"
ERROR_LOG = "error.log"  # the traceback of an env failure (the console gets one line)
# The trainer's own counters; an agent's metrics of these names are replaced by them.
RESERVED_METRICS = frozenset({"iteration", "env_steps", "wall_time", "steps_per_s"})
# The in-memory snapshot of the last completed iteration (what an error or interrupt saves)
# is taken after every iteration while one costs less than SNAPSHOT_FREE seconds; a costlier
# one (an EvoTorch searcher at P = 256: tens of ms) only as often as keeps snapshots within
# SNAPSHOT_SHARE of the loop's time, and at every checkpoint. Results are unaffected; a
# crash may then resume from a few iterations back.
SNAPSHOT_FREE = 0.005
SNAPSHOT_SHARE = 0.02


@dataclass
class RunProgress:
    """The counters a checkpoint restores."""

    iteration: int = 0
    env_steps: int = 0
    wall_time: float = 0.0
    eval_history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def eval_seeds(seed: int, episodes: int) -> list[int]:
    """The held-out episode seeds ``[E]``: one fixed set per run seed, drawn from the
    evaluation stream (disjoint from the training stream the agents draw from)."""
    return episode_seeds(seed, EVAL_STREAM, 0, episodes)


def evaluate_vector(
    evaluator: Evaluator,
    vector: torch.Tensor,
    seeds: list[int],
    obs_norm: ObsNormalizer | None = None,
) -> dict[str, float]:
    """Evaluate one policy ``[D]`` (with its observation normaliser) on ``seeds``:
    ``eval_return_mean``/``_std`` (and the success rate when the env reports one)."""
    result = evaluator.evaluate(vector.detach().reshape(1, -1), seeds, obs_norm=obs_norm)
    returns = np.asarray(result.returns[0], dtype=np.float64)
    out = {"eval_return_mean": float(returns.mean()), "eval_return_std": float(returns.std())}
    if result.successes is not None:
        out["eval_success_rate"] = float(np.mean(result.successes[0]))
    return out


def policy_spec_for(cfg: RunConfig, factory: EnvFactory) -> PolicySpec:
    """The policy network for the task's single observation/action spaces and ``policy:``.

    :raises ConfigError: a space no policy supports (listing the supported ones).
    """
    observation_space, action_space = factory.spaces()
    spec = PolicySpec(
        observation_space,
        action_space,
        cell=cfg.policy.cell,
        hidden=cfg.policy.hidden,
        layers=cfg.policy.layers,
        memory=cfg.policy.memory,
        readout_hidden=tuple(cfg.policy.readout_hidden),
    )
    try:
        build_layout(spec)  # builds the observation encoder and the action head
    except ValueError as err:
        raise ConfigError(f"env.id {cfg.env.id!r}: {err}") from None
    return spec


def task_solved(
    factory: EnvFactory,
    tests: SuccessTests,
    vector: torch.Tensor,
    obs_norm: ObsNormalizer | None,
    evaluation: dict[str, float],
    *,
    stop_early: bool = False,
) -> tuple[bool | None, dict[str, Any]]:
    """The trainer's ``solved`` for the policy ``vector [D]`` and its held-out
    ``evaluation``: the task's own success test when it defines one
    (:class:`evolstm.rollouts.success.SuccessTests`, which reuses the result for an unchanged
    policy; its other numbers are returned too), else the registered ``reward_threshold`` on
    the mean evaluation return; ``None`` without either.
    """
    success = tests(vector, obs_norm, stop_early=stop_early) or {}
    solved = success.pop("solved", None)
    threshold = factory.reward_threshold
    if solved is None and threshold is not None:
        solved = evaluation["eval_return_mean"] >= threshold
    return solved, success


def where_it_runs(address: str | None, workers: int) -> str:
    """The console's start line about where the population is evaluated."""
    if address is None:
        return "evaluation in-process (no Ray)"
    import ray

    target = "an embedded local Ray" if address == "local" else f"the Ray cluster at {address}"
    if ray.is_initialized():
        target += f" ({ray.get_runtime_context().gcs_address})"
    return f"evaluation on {target} with {workers} worker(s)"


def env_factory_for(cfg: RunConfig) -> EnvFactory:
    factory = resolve_env(cfg.env.id, cfg.env.kwargs, [w.model_dump() for w in cfg.env.wrappers])
    factory.on_nan = cfg.env.on_nan
    factory.max_episode_steps = cfg.env.max_episode_steps
    return factory


def _restore(agent: Agent, checkpoint: dict[str, Any], run_dir: Path) -> None:
    """Load the agent and RNG states; a state the agent rejects (a crafted or damaged file:
    unknown classes in it, wrong shapes) is a one-line :class:`FileFormatError`."""
    try:
        agent.load_state_dict(checkpoint["agent"])
        restore_rng_state(checkpoint["rng"])
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, RuntimeError) as err:
        raise FileFormatError(
            f"{run_dir / CHECKPOINT_DIR / LATEST}: agent state rejected "
            f"({type(err).__name__}: {err})"
        ) from None


def _build_evaluator(
    factory: EnvFactory, spec: PolicySpec, address: str | None, workers: int, timeout: float
) -> Evaluator:
    if address is None:
        return PopulationEvaluator(factory, spec)
    from evolstm.rollouts.ray_evaluator import RayEvaluator

    return RayEvaluator(
        factory, spec, num_workers=workers, address=address, shard_timeout_s=timeout
    )


def _payload(agent: Agent, cfg: RunConfig, progress: RunProgress) -> dict[str, Any]:
    obs_norm = agent.obs_normalizer()
    return {
        "agent": copy.deepcopy(agent.state_dict()),
        "rng": capture_rng_state(),
        "config": cfg.to_yaml_dict(),
        "iteration": progress.iteration,
        "env_steps": progress.env_steps,
        "wall_time": progress.wall_time,
        "eval_history": copy.deepcopy(progress.eval_history),
        "policy_vector": agent.policy_vector().detach().clone(),
        "obs_norm": None if obs_norm is None else obs_norm.state_dict(),
    }


def train(
    cfg: RunConfig,
    *,
    resume: Path | None = None,
    ray_address: str | None = None,
    runs_root: Path = Path("runs"),
) -> Path:
    """Train ``cfg``'s agent until the budget is spent; return the run folder.

    :param cfg: a validated config (:func:`evolstm.run.config.load_config`).
    :param resume: a run folder to continue from its latest checkpoint, exactly.
    :param ray_address: overrides ``ray.address`` (``"local"``, ``"auto"``, ``"ray://..."``).
    :param runs_root: where new run folders are created.
    :raises ConfigError: for anything the user can fix in the config or command line.
    """
    try:
        address = check_ray_address(ray_address if ray_address is not None else cfg.ray.address)
    except ValueError as err:
        raise ConfigError(f"ray address {ray_address!r}: {err}") from None
    cfg, agent_cls, options = resolve_agent(cfg)
    checkpoint = None
    if resume is not None:
        run_dir = resume_dir(Path(resume))
        checkpoint = load_checkpoint(run_dir, "--resume")
        check_resumable(checkpoint["config"], cfg, run_dir)
    factory = env_factory_for(cfg)
    spec = policy_spec_for(cfg, factory)
    owns_ray = False
    if address not in (None, "local"):
        from evolstm.rollouts.ray_evaluator import connect_ray

        owns_ray = connect_ray(address)  # fails in seconds, before any folder is made
    try:
        if checkpoint is None:
            run_dir = writable_run_dir(Path(runs_root), cfg)
        else:
            write_config(run_dir, cfg, "--resume")
        with _env_errors_logged(run_dir):
            return _train_in(cfg, agent_cls, options, factory, spec, address, checkpoint, run_dir)
    finally:
        if owns_ray:
            import ray

            ray.shutdown()


@contextlib.contextmanager
def _env_errors_logged(run_dir: Path) -> Iterator[None]:
    """An env failure or a diverged update inside the block writes its traceback to
    ``run_dir``'s ``error.log`` and names that file (and the checkpoint to resume from) in its
    one-line message."""
    try:
        yield
    except (EnvError, TrainingDiverged) as err:
        log = run_dir / ERROR_LOG
        with contextlib.suppress(OSError):
            log.write_text(f"{err}\n\n{err.details}{traceback.format_exc()}")
        err.args = (f"{err.args[0]}; traceback in {log}{getattr(err, 'resume_note', '')}",)
        raise


def _train_in(
    cfg: RunConfig,
    agent_cls: type[Agent],
    options: Any,
    factory: EnvFactory,
    spec: PolicySpec,
    address: str | None,
    checkpoint: dict[str, Any] | None,
    run_dir: Path,
) -> Path:
    """The body of :func:`train` once the run folder exists."""
    seed_everything(cfg.seed)
    progress = RunProgress()
    closers: list[Any] = []
    try:
        # The pg family collects on its own Ray actors (ctx.ray_address); no Ray evaluator.
        pg = agent_cls.family == "pg"
        evaluator = _build_evaluator(
            factory, spec, None if pg else address, cfg.ray.num_workers, cfg.ray.shard_timeout_s
        )
        closers.append(evaluator)
        held_out = PopulationEvaluator(factory, spec)
        closers.append(held_out)
        ctx = AgentContext(
            policy_spec=spec,
            seed=cfg.seed,
            evaluator=evaluator,
            make_vector_env=factory.make_vector,
            ray_address=address,
            num_workers=cfg.ray.num_workers,
            shard_timeout_s=cfg.ray.shard_timeout_s,
        )
        agent = agent_cls(options, ctx)
        closers.insert(0, agent)
        if checkpoint is not None:
            _restore(agent, checkpoint, run_dir)
            progress = RunProgress(
                iteration=int(checkpoint["iteration"]),
                env_steps=int(checkpoint["env_steps"]),
                wall_time=float(checkpoint["wall_time"]),
                eval_history=list(checkpoint["eval_history"]),
            )
        loggers, console = run_loggers(
            cfg, run_dir, progress.iteration if checkpoint is not None else None
        )
        closers.append(loggers)
        if console is not None:
            start_note = f"resumed at iteration {progress.iteration}" if checkpoint else "started"
            console.note(f"run folder {run_dir} ({start_note})")
            console.note(where_it_runs(address, getattr(evaluator, "num_workers", 0)))
            if (why := factory.sync_reason()) is not None:
                console.note(f"{cfg.env.id} runs on gymnasium's SyncVectorEnv (slower): {why}")
        tests = SuccessTests(factory, spec)
        _loop(cfg, agent, held_out, loggers, progress, run_dir, factory, tests)
        summary = _finish(cfg, agent, held_out, factory, spec, tests, progress, run_dir)
        loggers.record_summary(summary, run_dir / POLICY_FILE)
        if console is not None:
            console.summary(summary)
    except BaseException:
        _close_all(closers, raise_errors=False)
        raise
    _close_all(closers, raise_errors=True)
    return run_dir


def _loop(
    cfg: RunConfig,
    agent: Agent,
    held_out: Evaluator,
    loggers: Logger,
    progress: RunProgress,
    run_dir: Path,
    factory: EnvFactory,
    tests: SuccessTests,
) -> None:
    """Step the agent until the budget is spent (or, with ``budget.stop_when_solved``, until
    an evaluation meets the task's success test); checkpoint periodically and on any error."""
    seeds = eval_seeds(cfg.seed, cfg.eval.episodes)
    solved = bool(progress.eval_history and progress.eval_history[-1].get("solved"))
    saved_iteration = progress.iteration
    last_payload: dict[str, Any] | None = None
    snapshot_seconds = last_cost = 0.0
    start, base_wall = time.perf_counter(), progress.wall_time
    try:
        while not (cfg.budget.stop_when_solved and solved) and not cfg.budget.spent(
            iterations=progress.iteration,
            env_steps=progress.env_steps,
            seconds=base_wall + time.perf_counter() - start,
        ):
            step_start = time.perf_counter()
            metrics = dict(agent.step())
            step_seconds = time.perf_counter() - step_start
            if "env_steps" not in metrics:
                raise KeyError(f"{type(agent).__name__}.step() returned no 'env_steps' metric")
            step_env_steps = int(metrics["env_steps"])
            progress.iteration += 1
            progress.env_steps += step_env_steps
            progress.wall_time = base_wall + time.perf_counter() - start
            record = {
                "iteration": progress.iteration,
                "env_steps": progress.env_steps,
                "wall_time": progress.wall_time,
                "steps_per_s": step_env_steps / max(step_seconds, 1e-9),
                **{k: v for k, v in metrics.items() if k not in RESERVED_METRICS},
            }
            passed = False
            if cfg.eval.success_on_change:
                # Gomez et al.'s protocol: every new best network meets the success test
                # (screened with stop_early; unchanged policies are not tested again).
                runs = tests.runs
                result = tests(agent.policy_vector(), agent.obs_normalizer(), stop_early=True)
                if result is not None and tests.runs > runs:
                    passed = result["solved"]
                    record["success_tests"] = tests.runs
                    record["success_test_passed"] = float(passed)
            if progress.iteration % cfg.eval.every == 0 or passed:
                evaluation = evaluate_vector(
                    held_out, agent.policy_vector(), seeds, agent.obs_normalizer()
                )
                record.update(evaluation)
                solved_now, _ = task_solved(
                    factory,
                    tests,
                    agent.policy_vector(),
                    agent.obs_normalizer(),
                    evaluation,
                    stop_early=True,
                )
                if solved_now is not None:
                    record["eval_solved"] = solved_now
                solved = bool(solved_now)
                progress.eval_history.append(
                    {
                        "iteration": progress.iteration,
                        "env_steps": progress.env_steps,
                        "wall_time": progress.wall_time,
                        **evaluation,
                        "solved": solved_now,
                    }
                )
            loggers.log(record, progress.iteration)
            due = progress.iteration % cfg.checkpoint.every == 0
            elapsed = time.perf_counter() - start
            if due or last_cost < SNAPSHOT_FREE or snapshot_seconds <= SNAPSHOT_SHARE * elapsed:
                snapshot_start = time.perf_counter()
                last_payload = _payload(agent, cfg, progress)
                last_cost = time.perf_counter() - snapshot_start
                snapshot_seconds += last_cost
            if due:
                save_checkpoint(run_dir, progress.iteration, last_payload)
                saved_iteration = progress.iteration
        if saved_iteration < progress.iteration:
            last_payload = _payload(agent, cfg, progress)
            save_checkpoint(run_dir, progress.iteration, last_payload)
    except BaseException as err:
        # Save the state at the end of the last completed iteration (the agent may be
        # half-way through an update now), so `--resume` continues exactly from there.
        if last_payload is not None and last_payload["iteration"] > saved_iteration:
            path = save_checkpoint(run_dir, last_payload["iteration"], last_payload)
            note = f"checkpoint saved to {path}; continue with --resume {run_dir}"
            if not isinstance(err, (EnvError, TrainingDiverged)):  # these say it in their line
                print(
                    f"{type(err).__name__} after iteration {last_payload['iteration']}: {note}",
                    file=sys.stderr,
                )
            saved_iteration = last_payload["iteration"]
        if isinstance(err, (EnvError, TrainingDiverged)) and saved_iteration > 0:
            err.resume_note = (
                f"; last checkpoint: iteration {saved_iteration}, continue with --resume {run_dir}"
            )
        raise


def _finish(
    cfg: RunConfig,
    agent: Agent,
    held_out: Evaluator,
    factory: EnvFactory,
    spec: PolicySpec,
    tests: SuccessTests,
    progress: RunProgress,
    run_dir: Path,
) -> dict[str, Any]:
    """Final evaluation -> ``summary.json``; the final policy -> ``policy.pt``."""
    vector = agent.policy_vector()
    last = progress.eval_history[-1] if progress.eval_history else None
    if last is not None and last["iteration"] == progress.iteration:
        evaluation = {k: v for k, v in last.items() if k.startswith("eval_")}
    else:
        evaluation = evaluate_vector(
            held_out, vector, eval_seeds(cfg.seed, cfg.eval.episodes), agent.obs_normalizer()
        )
    # The task's own success test when it defines one, else its registered reward_threshold.
    solved, success = task_solved(factory, tests, vector, agent.obs_normalizer(), evaluation)
    summary = {
        **evaluation,
        **success,
        "env_steps": progress.env_steps,
        "wall_time": progress.wall_time,
        "solved": solved,
        "iterations": progress.iteration,
        "run_dir": str(run_dir),
    }
    atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    policy = RecurrentPolicy(spec, vector=vector, obs_norm=agent.obs_normalizer())
    metadata = {"env": cfg.to_yaml_dict()["env"], "seed": cfg.seed, "episodes": cfg.eval.episodes}
    atomic_write(run_dir / POLICY_FILE, lambda tmp: policy.save(tmp, metadata))
    return summary


def _close_all(closers: list[Any], *, raise_errors: bool) -> None:
    """Close everything; the first error is raised only when no other error is in flight."""
    first_error: Exception | None = None
    for obj in closers:
        try:
            obj.close()
        except Exception as err:
            first_error = first_error or err
    if first_error is not None and raise_errors:
        raise first_error
