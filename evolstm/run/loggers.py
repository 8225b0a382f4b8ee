"""Where per-iteration metrics go: console, ``metrics.jsonl``, W&B, and a fan-out of them.

Loggers only ever receive the metrics dict the trainer builds (``iteration``,
``env_steps``, ``wall_time``, ``steps_per_s``, the agent's metrics and, on evaluation
iterations, ``eval_return_mean``/``eval_return_std``); they never reach back into the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

if TYPE_CHECKING:
    from evolstm.run.config import RunConfig

METRICS_FILE = "metrics.jsonl"


class Logger(Protocol):
    """Receives one metrics dict per iteration."""

    def log(self, metrics: Mapping[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


def _plain(value: Any) -> Any:
    """A JSON-ready python value (numpy/torch scalars -> numbers, non-finite -> ``None``)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    elif hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlLogger:
    """``run_dir/metrics.jsonl``: one JSON object per iteration, flushed line by line.

    :param path: the file (appended to, so a resumed run continues it).
    :param keep_up_to: on resume, drop lines whose ``iteration`` is beyond this (they were
        written after the checkpoint the run resumes from and will be produced again).
    """

    def __init__(self, path: str | Path, *, keep_up_to: int | None = None) -> None:
        self.path = Path(path)
        if keep_up_to is not None and self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("iteration", 0) <= keep_up_to
            ]
            self.path.write_text("".join(f"{line}\n" for line in kept))
        self._file = self.path.open("a", encoding="utf-8")

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        record = {key: _plain(value) for key, value in metrics.items()}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _format_number(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class ConsoleLogger:
    """A live progress line on a terminal; a plain line every ``every`` iterations otherwise.

    Shows iteration, best (so far) and mean return, the last evaluation, env steps,
    steps/s and elapsed time. The bar tracks whichever budget is closest to spent.

    :param total_iterations: ``budget.iterations`` (or ``None``).
    :param total_env_steps: ``budget.env_steps`` (or ``None``).
    :param total_seconds: ``budget.seconds`` (or ``None``).
    :param every: iterations between lines when the console is not a terminal.
    :param console: where to print (stdout by default).
    """

    def __init__(
        self,
        *,
        total_iterations: int | None = None,
        total_env_steps: int | None = None,
        total_seconds: float | None = None,
        every: int = 10,
        console: Console | None = None,
    ) -> None:
        self.console = console or Console()
        self.totals = {
            "iteration": total_iterations,
            "env_steps": total_env_steps,
            "wall_time": total_seconds,
        }
        self.every = every
        self.best = -math.inf
        self.last_eval: float | None = None
        self._progress: Progress | None = None
        self._task: Any = None
        if self.console.is_terminal:
            self._progress = Progress(
                BarColumn(bar_width=20), TextColumn("{task.description}"), console=self.console
            )
            self._task = self._progress.add_task("starting", total=1.0)
            self._progress.start()

    def note(self, text: str) -> None:
        """A one-off message (run folder, resume point)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _fraction(self, metrics: Mapping[str, Any]) -> float:
        done = [
            float(metrics.get(key, 0.0)) / total
            for key, total in self.totals.items()
            if total is not None
        ]
        return min(1.0, max(done, default=0.0))

    def line(self, metrics: Mapping[str, Any]) -> str:
        """The status line for one iteration's metrics."""
        return " | ".join(
            [
                f"it {int(metrics.get('iteration', 0))}",
                f"best {_format_number(self.best if math.isfinite(self.best) else None)}",
                f"mean {_format_number(metrics.get('return_mean'))}",
                f"eval {_format_number(self.last_eval)}",
                f"{int(metrics.get('env_steps', 0)):,} steps",
                f"{float(metrics.get('steps_per_s', 0.0)):,.0f} steps/s",
                _format_duration(float(metrics.get("wall_time", 0.0))),
            ]
        )

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        for key in ("return_max", "return_mean"):
            if metrics.get(key) is not None:
                self.best = max(self.best, float(metrics[key]))
                break
        if metrics.get("eval_return_mean") is not None:
            self.last_eval = float(metrics["eval_return_mean"])
        text = self.line(metrics)
        if self._progress is not None:
            self._progress.update(self._task, completed=self._fraction(metrics), description=text)
        elif step == 1 or step % self.every == 0:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def summary(self, summary: Mapping[str, Any]) -> None:
        """The final line: evaluation return, solved, env steps, wall time, run folder."""
        self.close()
        solved = summary.get("solved")
        verdict = "" if solved is None else (" (solved)" if solved else " (not solved)")
        self.console.print(
            f"done: eval return {_format_number(summary.get('eval_return_mean'))} ± "
            f"{_format_number(summary.get('eval_return_std'))}{verdict} | "
            f"{int(summary.get('env_steps', 0)):,} env steps | "
            f"{float(summary.get('wall_time', 0.0)):.1f} s | {summary.get('run_dir')}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def wandb_run_id(run_dir: str | Path) -> str:
    """A W&B run id that is stable for a run folder (a resumed run continues its W&B run)."""
    run_dir = Path(run_dir).resolve()
    digest = hashlib.sha1(str(run_dir).encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in run_dir.name)
    return f"{safe[:100]}-{digest}"


def _warn(message: str) -> None:
    """One line on stderr (a W&B problem is worth a word, never a traceback or a stop)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


class WandbLogger:
    """Weights & Biases, offline by default: no login and no network, files under the run folder.

    Logs the resolved config, every iteration's metrics, the summary and the final policy
    (an artifact of type ``model``). ``env_steps`` and ``wall_time`` are step metrics
    (``define_metric``): every metric is plotted against ``env_steps`` as ``<key>``, and
    against ``wall_time`` as ``time/<key>``, so both families of optimisers compare on the
    same two axes. ``wandb sync run_dir/wandb/offline-run-*`` uploads an offline run later.

    W&B never ends a run: ``mode="online"`` that cannot reach the server within
    ``init_timeout`` seconds (no network, no API key) falls back to offline with one warning
    line; any later error inside W&B prints one warning and turns this logger off.

    :param run_dir: the run folder; W&B writes ``run_dir/wandb/``.
    :param config: the resolved run config (logged as the W&B config).
    :param mode: ``"offline"`` or ``"online"`` (``"disabled"`` means: do not build this logger).
    :param project: W&B project.
    :param group: W&B group (the runs of one comparison share it).
    :param job_type: W&B job type (the trainer passes the agent's name).
    :param init_timeout: seconds ``wandb.init`` may take before it gives up.
    """

    def __init__(
        self,
        run_dir: str | Path,
        config: Mapping[str, Any],
        *,
        mode: str = "offline",
        project: str = "evolstm",
        group: str | None = None,
        job_type: str | None = None,
        init_timeout: float = 30.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.mode = mode
        self.run: Any = None
        self._defined: set[str] = set()
        kwargs = {
            "project": project,
            "group": group,
            "job_type": job_type,
            "name": self.run_dir.name,
            "id": wandb_run_id(self.run_dir),
            "config": dict(config),
        }
        try:
            self.run = self._init(mode, init_timeout, kwargs)
        except Exception as err:
            if mode != "online":
                _warn(f"W&B could not start ({_first_line(err)}); this run logs without W&B")
                return
            try:
                import wandb

                # The service still holds the failed online run's id: restart it first
                # (unless another run of this process is active), then go offline.
                if wandb.run is None:
                    wandb.teardown()
                self.run = self._init("offline", init_timeout, kwargs)
                self.mode = "offline"
            except Exception as offline_err:
                _warn(
                    f"W&B online failed ({_first_line(err)}) and so did offline "
                    f"({_first_line(offline_err)}); this run logs without W&B"
                )
                return
            _warn(
                f"W&B online failed ({_first_line(err)}); logging offline to "
                f"{self.run_dir / 'wandb'} instead (upload later with `wandb sync`)"
            )

    def _init(self, mode: str, init_timeout: float, kwargs: dict[str, Any]) -> Any:
        import wandb

        # wandb reads its process-wide settings (silence, the Weave hint it prints when a
        # module named `agents` is imported) from the environment at its first init, so they
        # are exported; mode and folder are also passed to init, which takes precedence.
        os.environ["WANDB_MODE"] = mode
        os.environ["WANDB_DIR"] = str(self.run_dir)
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        settings = wandb.Settings(
            mode=mode, silent=True, console="off", init_timeout=float(init_timeout)
        )
        run = wandb.init(
            resume="allow", dir=str(self.run_dir), settings=settings, reinit="create_new", **kwargs
        )
        run.define_metric("env_steps")
        run.define_metric("wall_time")
        run.define_metric("time/*", step_metric="wall_time")
        return run

    def _guard(self, what: str, action: Any) -> None:
        """Run ``action()``; on an error inside W&B, warn once and stop using W&B."""
        if self.run is None:
            return
        try:
            action()
        except Exception as err:
            _warn(f"W&B failed while {what} ({_first_line(err)}); the run goes on without W&B")
            run, self.run = self.run, None
            with contextlib.suppress(Exception):
                run.finish(exit_code=1)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self._guard("logging metrics", lambda: self._log(metrics))

    def _log(self, metrics: Mapping[str, Any]) -> None:
        row: dict[str, Any] = {}
        for key, value in metrics.items():
            value = _plain(value)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            row[key] = value
            if key in ("env_steps", "wall_time"):
                continue
            if key not in self._defined:
                self.run.define_metric(key, step_metric="env_steps")
                self._defined.add(key)
            row[f"time/{key}"] = value
        self.run.log(row)

    def record_summary(self, summary: Mapping[str, Any], policy_path: str | Path | None) -> None:
        """The run's final summary (``summary.json``) and the policy file as a ``model``
        artifact named ``policy-<run id>``."""
        self._guard("writing the summary", lambda: self._record_summary(summary, policy_path))

    def _record_summary(self, summary: Mapping[str, Any], policy_path: str | Path | None) -> None:
        import wandb

        values = {key: _plain(value) for key, value in summary.items()}
        self.run.summary.update(
            {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))}
        )
        if policy_path is not None and Path(policy_path).is_file():
            artifact = wandb.Artifact(
                f"policy-{self.run.id}",
                type="model",
                metadata={k: v for k, v in values.items() if k != "run_dir"},
            )
            artifact.add_file(str(policy_path), name=Path(policy_path).name)
            self.run.log_artifact(artifact)

    def close(self) -> None:
        import wandb

        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            run.finish()
            # finish() returns before wandb's service process has closed the run's
            # transaction log; shutting the service down (unless another W&B run is active
            # in this process) waits for it, so the run folder is complete on return.
            if wandb.run is None:
                wandb.teardown()
        except Exception as err:
            _warn(f"W&B failed while finishing the run ({_first_line(err)})")


class FanOutLogger:
    """Sends every call to each logger in turn; closes all of them even if one fails."""

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        for logger in self.loggers:
            logger.log(metrics, step)

    def record_summary(self, summary: Mapping[str, Any], policy_path: str | Path | None) -> None:
        """The final summary and policy file, to the loggers that keep them (W&B)."""
        for logger in self.loggers:
            record = getattr(logger, "record_summary", None)
            if record is not None:
                record(summary, policy_path)

    def close(self) -> None:
        errors: list[BaseException] = []
        for logger in self.loggers:
            try:
                logger.close()
            except Exception as err:
                errors.append(err)
        if errors:
            raise errors[0]


def run_loggers(
    cfg: RunConfig, run_dir: Path, keep_up_to: int | None
) -> tuple[FanOutLogger, ConsoleLogger | None]:
    """What a run logs to, per its ``logging:`` section: the console's progress (also
    returned on its own), ``metrics.jsonl`` in ``run_dir`` (lines past ``keep_up_to``
    iterations are dropped on resume) and W&B; a W&B that cannot start is a warning."""
    loggers: list[Logger] = []
    console = None
    try:
        if cfg.logging.console:
            console = ConsoleLogger(
                total_iterations=cfg.budget.iterations,
                total_env_steps=cfg.budget.env_steps,
                total_seconds=cfg.budget.seconds,
                every=cfg.eval.every,
            )
            loggers.append(console)
        loggers.append(JsonlLogger(run_dir / METRICS_FILE, keep_up_to=keep_up_to))
        wandb_cfg = cfg.logging.wandb
        if wandb_cfg.mode != "disabled":
            try:
                wandb_logger = WandbLogger(
                    run_dir,
                    cfg.to_yaml_dict(),
                    mode=wandb_cfg.mode,
                    project=wandb_cfg.project,
                    group=wandb_cfg.group,
                    job_type=cfg.agent.name,
                    init_timeout=wandb_cfg.init_timeout,
                )
            except Exception as err:  # W&B is a view on the run, never a reason to stop it
                first = (str(err).strip().splitlines() or [""])[0][:160]
                print(
                    f"warning: W&B unavailable ({type(err).__name__}: {first}); the run goes on "
                    f"without it (metrics in {run_dir / METRICS_FILE})",
                    file=sys.stderr,
                )
            else:
                loggers.append(wandb_logger)
    except BaseException:
        FanOutLogger(loggers).close()
        raise
    return FanOutLogger(loggers), console
