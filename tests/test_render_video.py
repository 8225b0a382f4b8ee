"""Built-in tasks render ``rgb_array`` frames with numpy; ``evolstm eval RUN --video`` writes
a video whose frames are the recorded episodes."""

from __future__ import annotations

import re

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest

import envs  # noqa: F401
from evolstm.network.policy import RecurrentPolicy
from evolstm.rollouts.evaluation import EVAL_STREAM, episode_seeds
from evolstm.run.cli import main
from tests.test_cli import _assert_one_line_error, _config_file
from tests.test_trainer import reference_eval

RENDERED = {
    "evolstm/CartPoleNoVel-v0": (400, 600),
    "evolstm/SinglePoleNoVel-v0": (400, 600),
    "evolstm/DoublePoleNoVel-v0": (400, 600),
    "evolstm/PendulumNoVel-v0": (300, 300),
    "evolstm/TMaze-v0": (120, 312),
}


@pytest.mark.parametrize("env_id", list(RENDERED))
def test_rgb_array_frames_follow_the_state(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    assert env.metadata["render_fps"] > 0 and "rgb_array" in env.metadata["render_modes"]
    env.reset(seed=0)
    first = env.render()
    assert first.dtype == np.uint8 and first.shape == (*RENDERED[env_id], 3)
    env.action_space.seed(0)
    frames = [first]
    for _ in range(5):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        frames.append(env.render())
        if terminated or truncated:
            break
    # Something moved (cart, poles, pendulum or the T-maze agent) and the frame is not blank.
    assert any(not np.array_equal(frames[0], f) for f in frames[1:]), env_id
    assert len(np.unique(first.reshape(-1, 3), axis=0)) >= 3
    env.close()


def test_cartpole_frame_draws_the_pole_at_its_angle():
    env = gym.make("evolstm/CartPoleNoVel-v0", render_mode="rgb_array").unwrapped
    env.reset(seed=0)
    tips = {}
    for angle in (-0.2, 0.2):
        env.state = np.array([0.0, 0.0, angle, 0.0])
        pole = np.all(env.render() == (202, 152, 101), axis=-1)
        rows, cols = np.nonzero(pole)
        tips[angle] = cols[rows.argmin()]  # the topmost pole pixel
    # A pole leaning right (positive angle) has its tip right of the centre, and vice versa.
    assert tips[-0.2] < 300 < tips[0.2]


def test_eval_writes_a_gif_of_the_recorded_episodes(tmp_path, fake_agent, capsys):
    config = _config_file(tmp_path, budget={"iterations": 2}, seed=4)
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "runs")]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    capsys.readouterr()
    video = tmp_path / "episodes.gif"
    assert main(["eval", str(run_dir), "--video", str(video), "--episodes", "2"]) == 0
    out = capsys.readouterr().out

    # Independent reference: the same policy on single envs, one seed at a time.
    policy = RecurrentPolicy.load(run_dir / "policy.pt")
    returns = reference_eval(policy, episode_seeds(4, EVAL_STREAM, 0, 2))
    assert f"eval return {returns.mean():.4g} ± {returns.std():.4g} over 2 episodes" in out
    frames = iio.imread(video, index=None)
    # CartPoleNoVel pays 1 per step: each episode gives its reset frame plus one per step.
    assert frames.shape == (int(returns.sum()) + 2, 400, 600, 3)
    assert re.search(rf"video .*episodes\.gif: 2 episode\(s\), {len(frames)} frames at 50 fps", out)
    env = gym.make("evolstm/CartPoleNoVel-v0", render_mode="rgb_array")
    env.reset(seed=episode_seeds(4, EVAL_STREAM, 0, 1)[0])
    # GIF stores a palette; the first frame is the first episode's reset frame.
    assert np.abs(frames[0].astype(int) - env.render().astype(int)).max() <= 8


def test_a_wrong_video_suffix_is_a_one_line_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--video", str(tmp_path / "out.avi")]) == 2
    _assert_one_line_error(capsys.readouterr().err, "--video")
