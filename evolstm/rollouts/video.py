"""Recording a trained policy: episodes rendered with ``render_mode="rgb_array"`` and written
as ``.gif`` (Pillow, always available) or ``.mp4`` (ffmpeg through ``imageio-ffmpeg``: the
``video`` extra) with imageio."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evolstm.errors import ConfigError
from evolstm.network.layout import PolicySpec
from evolstm.network.obs_norm import ObsNormalizer
from evolstm.network.policy import RecurrentPolicy
from evolstm.rollouts.env_factory import EnvFactory

VIDEO_SUFFIXES = (".gif", ".mp4")
# A double-pole episode may last 100,000 steps: a video stops growing here.
MAX_FRAMES = 5_000


def check_video_path(path: Path) -> Path:
    """``path`` when it ends in ``.gif`` or ``.mp4`` (and ``.mp4`` can be written)."""
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ConfigError(f"--video {path}: expected a .gif or .mp4 file name")
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"--video {path}: writing .mp4 needs ffmpeg: pip install 'evolstm[video]' "
                "(or write a .gif, which needs nothing more)"
            ) from None
    if not path.parent.is_dir():
        raise ConfigError(f"--video {path}: the folder {path.parent} does not exist")
    return path


def record_episodes(
    factory: EnvFactory,
    spec: PolicySpec,
    vector: torch.Tensor,
    obs_norm: ObsNormalizer | None,
    seeds: Sequence[int],
    *,
    max_frames: int = MAX_FRAMES,
) -> tuple[list[np.ndarray], list[float], float]:
    """Play one episode per seed with the greedy policy on a rendering env.

    :returns: the frames ``[H, W, 3]`` (each episode's reset frame, then one per step), the
        episode returns (of whole episodes, also past ``max_frames``) and the env's
        ``render_fps``.
    """
    render_factory = dataclasses.replace(
        factory, kwargs={**factory.kwargs, "render_mode": "rgb_array"}
    )
    try:
        env = render_factory.make()
    except (TypeError, ConfigError) as err:
        raise ConfigError(
            f"env.id {factory.id!r} cannot render: its constructor does not take "
            f"render_mode='rgb_array' ({err})"
        ) from None
    policy = RecurrentPolicy(spec, vector=vector, obs_norm=obs_norm)
    frames: list[np.ndarray] = []
    returns: list[float] = []
    try:
        if "rgb_array" not in env.metadata.get("render_modes", []):
            raise ConfigError(f"env.id {factory.id!r} does not render rgb_array frames")
        for seed in seeds:
            obs, _ = env.reset(seed=int(seed))
            _keep(frames, env.render(), max_frames)
            state: Any = None
            total, done = 0.0, False
            while not done:
                action, state = policy.predict(obs, state)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
                _keep(frames, env.render(), max_frames)
            returns.append(total)
        fps = float(env.metadata.get("render_fps") or 30)
    finally:
        env.close()
    return frames, returns, fps


def _keep(frames: list[np.ndarray], frame: Any, max_frames: int) -> None:
    if len(frames) < max_frames:
        frames.append(np.asarray(frame, dtype=np.uint8))


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float) -> None:
    """``frames`` as a looping ``.gif`` or an ``.mp4`` (H.264, even sizes padded)."""
    import imageio.v3 as iio

    if not frames:
        raise ConfigError(f"--video {path}: no frames to write")
    if path.suffix.lower() == ".gif":
        # Pillow's GIF writer takes the duration of a frame in milliseconds.
        iio.imwrite(path, np.stack(frames), extension=".gif", duration=1000.0 / fps, loop=0)
        return
    height, width = frames[0].shape[:2]
    pad = ((0, height % 2), (0, width % 2), (0, 0))  # H.264 needs even sizes
    stack = np.stack([np.pad(f, pad, mode="edge") for f in frames])
    iio.imwrite(path, stack, extension=".mp4", plugin="FFMPEG", fps=fps, macro_block_size=1)
