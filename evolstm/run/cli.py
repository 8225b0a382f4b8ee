"""The ``evolstm`` command line (also ``python -m evolstm``).

::

    evolstm train CONFIG.yaml [key.sub=value ...] [--resume RUN_DIR] [--ray-address ADDR]
                  [--runs-dir DIR]
    evolstm train --resume RUN_DIR [key.sub=value ...]     # the run's own config.yaml
    evolstm eval RUN_DIR|CHECKPOINT|POLICY [--episodes N] [--seed S] [--env ENV_ID]
                 [--video OUT.gif|OUT.mp4]
    evolstm compare COMPARE.yaml [key.sub=value ...] [--ray-address ADDR] [--runs-dir DIR]
    evolstm envs
    evolstm agents

A :class:`~evolstm.errors.ConfigError` anywhere prints ``error: <one line>`` to stderr and
exits with status 2 (no traceback), like argparse's own usage errors. An
:class:`~evolstm.errors.EnvError` (the env raised or returned NaN mid-run) prints one line too
and exits with status 1; its traceback is in the run folder's ``error.log``. So does a
:class:`~evolstm.errors.TrainingDiverged` (a NaN/inf loss or gradient).

Like ``python -m evolstm``, the command puts the current folder first on ``sys.path``, so
``env.id: "mymodule:MyEnv"`` (or a wrapper) finds ``mymodule.py`` beside the config.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evolstm.errors import ConfigError, EnvError, TrainingDiverged

if TYPE_CHECKING:
    import torch

    from evolstm.network.layout import PolicySpec
    from evolstm.network.obs_norm import ObsNormalizer

EXIT_CONFIG_ERROR = 2
EXIT_RUN_FAILED = 1
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evolstm", description="LSTM policies for POMDPs: neuroevolution and policy gradients."
    )
    from evolstm import __version__

    parser.add_argument("--version", action="version", version=f"evolstm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train an agent from a YAML config")
    train.add_argument(
        "config",
        metavar="CONFIG.yaml",
        nargs="?",
        help="the training config (default with --resume: the run's own config.yaml)",
    )
    train.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="config overrides (YAML values)"
    )
    train.add_argument("--resume", metavar="RUN_DIR", type=Path, help="continue a run exactly")
    _add_run_location_options(train)

    evaluate = commands.add_parser("eval", help="evaluate a run's policy on held-out episodes")
    evaluate.add_argument("path", metavar="RUN_DIR|CHECKPOINT", type=Path)
    evaluate.add_argument("--episodes", type=int, help="default: the run's eval.episodes")
    evaluate.add_argument("--seed", type=int, help="default: the run's seed (its final eval)")
    evaluate.add_argument(
        "--video",
        metavar="OUT.gif|OUT.mp4",
        type=Path,
        help="record the episodes (default 1 with --video) to a video file",
    )
    evaluate.add_argument(
        "--env",
        metavar="ENV_ID",
        help="evaluate on this env (a bare .pt file may not import the modules it names)",
    )

    compare = commands.add_parser("compare", help="run every variant x seed of a compare file")
    compare.add_argument("compare_file", metavar="COMPARE.yaml", help="the compare file")
    compare.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="overrides of the base config"
    )
    _add_run_location_options(compare)

    commands.add_parser("envs", help="list the registered evolstm tasks with their spaces")
    commands.add_parser("agents", help="list the available agents: family, description and options")
    return parser


def _add_run_location_options(parser: argparse.ArgumentParser) -> None:
    """``--ray-address`` and ``--runs-dir``, shared by ``train`` and ``compare``."""
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="overrides ray.address: local | auto | ray://host:port | host:port",
    )
    parser.add_argument(
        "--runs-dir", metavar="DIR", type=Path, default=Path("runs"), help="default: runs/"
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from evolstm.run.config import load_config

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).is_file():
        config, overrides = None, [config, *overrides]  # `train --resume RUN key=value`
    if config is None:
        if args.resume is None:
            raise ConfigError("train needs a CONFIG.yaml, or --resume RUN_DIR (its own config)")
        from evolstm.run.run_dir import CONFIG_FILE, resume_dir

        config = resume_dir(args.resume) / CONFIG_FILE
    cfg = load_config(config, overrides)
    from evolstm.run.trainer import train  # after validation: config errors come fast

    train(cfg, resume=args.resume, ray_address=args.ray_address, runs_root=args.runs_dir)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import json

    from evolstm.run.compare import COMPARE_REPORT, load_comparison, run_comparison

    comparison = load_comparison(args.compare_file, args.overrides)
    folder = run_comparison(comparison, ray_address=args.ray_address, runs_root=args.runs_dir)
    report = json.loads((folder / COMPARE_REPORT).read_text())
    failed = sum("error" in run for variant in report["variants"] for run in variant["runs"])
    if failed:
        print(f"{failed} run(s) failed; see {folder / COMPARE_REPORT}", file=sys.stderr)
        return 1
    return 0


def _load_for_eval(
    path: Path, env_id: str | None
) -> tuple[dict, torch.Tensor, ObsNormalizer | None, PolicySpec | None]:
    """The run config data, the policy vector ``[D]``, its observation normaliser and (for a
    policy file) its spec. A run folder's ``config.yaml`` is code the user named; a bare
    ``.pt`` file is data: it is loaded with ``weights_only=True`` and the env it records is
    built only when that imports no module (or when ``--env`` names one)."""
    from evolstm.errors import FileFormatError
    from evolstm.network.obs_norm import ObsNormalizer
    from evolstm.network.policy import POLICY_FORMAT, RecurrentPolicy
    from evolstm.run.checkpoint import FORMAT, LATEST, find_checkpoint, load_data_file
    from evolstm.run.config import read_yaml
    from evolstm.run.run_dir import CONFIG_FILE
    from evolstm.run.trainer import POLICY_FILE

    if path.is_dir():
        config = read_yaml(path / CONFIG_FILE)
        if env_id is not None:
            config["env"] = {**config.get("env", {}), "id": env_id, "wrappers": []}
        if (path / POLICY_FILE).is_file():
            policy = RecurrentPolicy.load(path / POLICY_FILE)
            return config, policy.to_vector(), policy.obs_norm, policy.spec
        blob = load_data_file(find_checkpoint(path, "eval"), "checkpoint")
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise FileFormatError(f"{path / LATEST}: not an evolstm checkpoint ({FORMAT})")
        return config, blob["policy_vector"], ObsNormalizer.from_state_dict(blob["obs_norm"]), None
    if not path.is_file():
        raise ConfigError(f"no run folder, checkpoint or policy file at {path}")
    blob = load_data_file(path, "checkpoint or policy")
    kind = blob.get("format") if isinstance(blob, dict) else None
    try:
        if kind == FORMAT:
            config = dict(blob["config"])
            env = _bare_file_env(path, config.get("env"), env_id)
            obs_norm = ObsNormalizer.from_state_dict(blob.get("obs_norm"))
            return {**config, "env": env}, blob["policy_vector"], obs_norm, None
    except (KeyError, TypeError, ValueError) as err:
        raise FileFormatError(f"{path}: malformed checkpoint ({err})") from None
    if kind != POLICY_FORMAT:
        raise FileFormatError(f"{path}: neither an evolstm checkpoint nor a policy file")
    policy = RecurrentPolicy.load(path)
    meta = policy.metadata
    config = {
        "env": _bare_file_env(path, meta.get("env"), env_id),
        "agent": {"name": "none"},
        "seed": int(meta.get("seed", 0)),
        "eval": {"episodes": int(meta.get("episodes", 32))},
    }
    return config, policy.to_vector(), policy.obs_norm, policy.spec


def _bare_file_env(path: Path, env: Any, env_id: str | None) -> dict[str, Any]:
    """The ``env`` section recorded in a data file, refused when building it would import a
    module (``module:Name`` ids, wrappers) that the command line did not name."""
    if not isinstance(env, dict) or not isinstance(env.get("id"), str):
        if env_id is None:
            raise ConfigError(
                f"{path}: records no env; pass --env ENV_ID or evaluate its run folder"
            )
        env = {}
    if env_id is not None:
        return {"id": env_id, "kwargs": dict(env.get("kwargs") or {}), "wrappers": []}
    imports = [env["id"]] if ":" in env["id"] else []
    imports += [w["path"] if isinstance(w, dict) else str(w) for w in env.get("wrappers") or []]
    if imports:
        raise ConfigError(
            f"{path}: its env would import {', '.join(repr(i) for i in imports)}; a policy or "
            "checkpoint file is data and names no code to run: evaluate its run folder "
            "(config.yaml is code you chose) or name the env with --env"
        )
    return {"id": env["id"], "kwargs": dict(env.get("kwargs") or {}), "wrappers": []}


def _cmd_eval(args: argparse.Namespace) -> int:
    from evolstm.rollouts.evaluation import PopulationEvaluator
    from evolstm.run.config import validate_config
    from evolstm.run.trainer import env_factory_for, eval_seeds, evaluate_vector, policy_spec_for

    if args.video is not None:
        from evolstm.rollouts.video import check_video_path

        check_video_path(args.video)
    data, vector, obs_norm, spec = _load_for_eval(args.path, args.env)
    cfg = validate_config(data, check_agent=False)
    episodes = args.episodes if args.episodes is not None else cfg.eval.episodes
    if args.video is not None and args.episodes is None:
        episodes = 1
    seed = args.seed if args.seed is not None else cfg.seed
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    factory = env_factory_for(cfg)
    env_spec = policy_spec_for(cfg, factory)
    if spec is None:
        spec = env_spec
    elif (spec.observation_space, spec.action_space) != (
        env_spec.observation_space,
        env_spec.action_space,
    ):
        raise ConfigError(
            f"{args.path}: the policy takes observations {spec.observation_space} and actions "
            f"{spec.action_space}, but {cfg.env.id!r} has {env_spec.observation_space} and "
            f"{env_spec.action_space}"
        )
    evaluator = PopulationEvaluator(factory, spec)
    try:
        result = evaluate_vector(evaluator, vector, eval_seeds(seed, episodes), obs_norm)
    finally:
        evaluator.close()
    if args.video is not None:
        from evolstm.rollouts.video import record_episodes, write_video

        frames, _, fps = record_episodes(
            factory, spec, vector, obs_norm, eval_seeds(seed, episodes)
        )
        write_video(args.video, frames, fps)
        print(f"video {args.video}: {episodes} episode(s), {len(frames)} frames at {fps:g} fps")
    line = (
        f"{cfg.env.id}: eval return {result['eval_return_mean']:.4g} ± "
        f"{result['eval_return_std']:.4g} over {episodes} episodes (seed {seed})"
    )
    if "eval_success_rate" in result:
        line += f", success rate {result['eval_success_rate']:.3f}"
    print(line)
    return 0


def _cmd_envs(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import envs
    from evolstm.rollouts.env_factory import OTHER_FORMS

    ids = envs.task_ids()
    width = max(len(i) for i in ids)
    for task_id in ids:
        try:
            env = gym.make(task_id)
            spaces = f"observation {env.observation_space}  action {env.action_space}"
            env.close()
        except Exception as err:  # one broken task must not hide the others
            spaces = f"(cannot be built: {type(err).__name__}: {err})"
        print(f"{task_id:<{width}}  {spaces}")
    print(f"env.id also accepts {OTHER_FORMS.removeprefix('or ')}")
    return 0


def _cmd_agents(args: argparse.Namespace) -> int:
    from evolstm.run.registry import available_agents, broken_agents, describe_agent

    for name, cls in available_agents().items():
        print("\n".join(describe_agent(name, cls)))
    for name, reason in broken_agents().items():
        print(f"{name}  (failed to load: {reason})")
    return 0


COMMANDS = {
    "train": _cmd_train,
    "eval": _cmd_eval,
    "compare": _cmd_compare,
    "envs": _cmd_envs,
    "agents": _cmd_agents,
}


def _import_from_cwd() -> None:
    """Put the current folder first on ``sys.path``, as ``python -m`` does (a console script
    does not), so user modules beside the config import. Ray workers inherit the driver's
    ``sys.path``, so they find them too."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for config and usage errors)."""
    _import_from_cwd()
    parser = build_parser()
    try:
        # Overrides may come after the options (`train c.yaml --resume R a=1`): argparse
        # leaves those as unknown arguments, and only `train` and `compare` accept them.
        args, extra = parser.parse_known_args(argv)
        takes_overrides = args.command in ("train", "compare")
        if extra and (not takes_overrides or any(e.startswith("-") for e in extra)):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if takes_overrides:
            args.overrides = [*args.overrides, *extra]
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_CONFIG_ERROR
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except (EnvError, TrainingDiverged) as err:  # one line; traceback in the run folder
        print(f"error: {err}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
