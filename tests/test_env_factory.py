"""EnvFactory: every way of naming an env, wrappers, the native vector path, pickling, errors."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import RecordEpisodeStatistics, TimeLimit

import envs
from envs.batched import BatchedEnv
from evolstm.errors import ConfigError
from evolstm.rollouts.env_factory import EnvFactory, resolve_env
from tests.fixture_envs import CueRecallEnv

REPO = Path(__file__).resolve().parents[1]


def make_cue_recall(delay: int = 1) -> gym.Env:
    """A ``module:factory`` target: a function returning an env."""
    return CueRecallEnv(delay=delay)


class SameStepVectorEnv(gym.vector.VectorEnv):
    """A vector env that declares gymnasium's SAME_STEP autoreset (which evolstm refuses)."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1) -> None:
        self.num_envs = num_envs
        self.single_observation_space = gym.spaces.Discrete(3)
        self.single_action_space = gym.spaces.Discrete(2)


@pytest.fixture
def registering_module(tmp_path, monkeypatch) -> str:
    """A module that registers ``evolstm_test/Cue-v0`` when imported (gymnasium's plug-in way)."""
    name = "evolstm_test_registering_env"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import gymnasium as gym

            if "evolstm_test/Cue-v0" not in gym.registry:
                gym.register(
                    id="evolstm_test/Cue-v0",
                    entry_point="tests.fixture_envs:CueRecallEnv",
                    kwargs={"delay": 4},
                    reward_threshold=0.9,
                )
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    gym.registry.pop("evolstm_test/Cue-v0", None)
    sys.modules.pop(name, None)


def _episode_length(env: gym.Env, seed: int = 0) -> int:
    env.reset(seed=seed)
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
        done = terminated or truncated
    return steps


def test_registered_evolstm_task_takes_the_native_vector_path():
    factory = resolve_env("evolstm/CartPoleNoVel-v0")
    assert factory.kind == "registered"
    single = factory.make()
    vec = factory.make_vector(5)
    assert isinstance(vec, BatchedEnv) and not isinstance(vec, SyncVectorEnv)
    assert vec.num_envs == 5
    assert vec.single_observation_space == single.observation_space
    assert vec.single_action_space == single.action_space
    assert factory.reward_threshold == gym.spec("evolstm/CartPoleNoVel-v0").reward_threshold
    vec.close()


def test_registered_gymnasium_id_without_a_vector_entry_point_uses_sync_vector():
    factory = resolve_env("Acrobot-v1")
    assert gym.spec("Acrobot-v1").vector_entry_point is None
    vec = factory.make_vector(2)
    assert isinstance(vec, SyncVectorEnv) and vec.num_envs == 2
    vec.close()


def test_module_env_id_form_imports_the_registering_module(registering_module):
    env_id = f"{registering_module}:evolstm_test/Cue-v0"
    factory = resolve_env(env_id)
    assert factory.kind == "registered"
    env = factory.make()
    assert env.observation_space == gym.spaces.Discrete(3)
    assert _episode_length(env) == 5, "registered kwargs (delay=4) reach the env"
    assert factory.reward_threshold == 0.9


def test_module_class_form_with_a_discrete_observation_space():
    factory = resolve_env("tests.fixture_envs:CueRecallEnv", {"delay": 6})
    assert factory.kind == "creator"
    env = factory.make()
    assert isinstance(env, CueRecallEnv) and env.observation_space == gym.spaces.Discrete(3)
    assert _episode_length(env) == 7
    assert factory.reward_threshold is None
    vec = factory.make_vector(3)
    assert isinstance(vec, SyncVectorEnv) and vec.num_envs == 3
    assert vec.single_observation_space == gym.spaces.Discrete(3)


def test_module_factory_form():
    factory = resolve_env("tests.test_env_factory:make_cue_recall", {"delay": 2})
    assert factory.kind == "creator"
    assert _episode_length(factory.make()) == 3


def test_wrappers_are_applied_in_order_and_skip_the_native_path():
    factory = resolve_env(
        "evolstm/CartPoleNoVel-v0",
        wrappers=[
            {"path": "gymnasium.wrappers:TimeLimit", "kwargs": {"max_episode_steps": 3}},
            "gymnasium.wrappers:RecordEpisodeStatistics",
        ],
    )
    env = factory.make()
    assert isinstance(env, RecordEpisodeStatistics) and isinstance(env.env, TimeLimit)
    vec = factory.make_vector(2)
    assert isinstance(vec, SyncVectorEnv)
    vec.reset(seed=0)
    # a cart-pole cannot fall within 3 steps of its start state, so only the limit ends it
    flags = [vec.step(np.zeros(2, dtype=np.int64))[2:4] for _ in range(3)]
    assert not any(terminated.any() for terminated, _ in flags)
    assert [truncated.tolist() for _, truncated in flags] == [[False] * 2] * 2 + [[True] * 2]
    assert [_episode_length(factory.make(), seed=s) for s in range(3)] == [3, 3, 3]


def test_pickle_round_trip_in_a_fresh_process(registering_module, tmp_path):
    factory = resolve_env(
        f"{registering_module}:evolstm_test/Cue-v0",
        {"delay": 2},
        ["gymnasium.wrappers:RecordEpisodeStatistics"],
    )
    blob = pickle.dumps(factory)
    assert pickle.loads(blob) == factory
    script = textwrap.dedent(
        """
        import pickle, sys
        factory = pickle.loads(sys.stdin.buffer.read())
        env = factory.make()
        env.reset(seed=0)
        steps, done = 0, False
        while not done:
            _, _, term, trunc, _ = env.step(0)
            steps, done = steps + 1, term or trunc
        print(type(env).__name__, steps)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=blob,
        capture_output=True,
        cwd=REPO,
        env={"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"},
        check=True,
        timeout=120,
    )
    assert out.stdout.decode().split() == ["RecordEpisodeStatistics", "3"]


def test_vector_env_with_another_autoreset_mode_is_refused():
    gym.register(
        id="evolstm_test/SameStep-v0",
        entry_point="tests.fixture_envs:CueRecallEnv",
        vector_entry_point="tests.test_env_factory:SameStepVectorEnv",
    )
    try:
        factory = resolve_env("evolstm_test/SameStep-v0")
        with pytest.raises(ConfigError, match=r"SAME_STEP.*NEXT_STEP"):
            factory.make_vector(2)
    finally:
        gym.registry.pop("evolstm_test/SameStep-v0")


def test_unknown_id_lists_the_tasks_and_the_other_forms():
    with pytest.raises(ConfigError) as info:
        resolve_env("TMaze-v0")
    message = str(info.value)
    assert "'TMaze-v0'" in message and "\n" not in message
    assert all(task_id in message for task_id in envs.task_ids())
    assert "'module:EnvId'" in message and "'module:Class'" in message
    assert "'module:factory'" in message


@pytest.mark.parametrize(
    ("env_id", "fragment"),
    [
        ("no_such_module_xyz:Env", "cannot import module 'no_such_module_xyz'"),
        ("tests.fixture_envs:Missing", "neither registers a gymnasium id 'Missing' nor defines"),
        ("gymnasium.spaces:Box", "not a gymnasium.Env subclass"),
        ("tests.test_env_factory:REPO", "neither a gymnasium.Env subclass nor a callable"),
        ("", "non-empty string"),
    ],
)
def test_bad_ids(env_id, fragment):
    with pytest.raises(ConfigError, match=fragment):
        resolve_env(env_id)


@pytest.mark.parametrize(
    ("wrapper", "fragment"),
    [
        ("gymnasium.wrappers:NoSuchWrapper", r"env.wrappers\[0\]: cannot import wrapper"),
        ("gymnasium.wrappers.TimeLimit", "not of the form 'module:attribute'"),
        ("tests.test_env_factory:REPO", "is not callable"),
        ({"kwargs": {}}, "expected 'module:Wrapper'"),
    ],
)
def test_bad_wrappers(wrapper, fragment):
    with pytest.raises(ConfigError, match=fragment):
        resolve_env("CartPole-v1", wrappers=[wrapper])


def test_rejected_kwargs_are_a_config_error():
    factory = resolve_env("tests.fixture_envs:CueRecallEnv", {"dealy": 3})
    with pytest.raises(ConfigError, match="dealy"):
        factory.spaces()


def test_factory_holds_only_plain_data():
    factory = resolve_env("evolstm/TMaze-v0", {}, ["gymnasium.wrappers:RecordEpisodeStatistics"])
    assert factory == EnvFactory(
        id="evolstm/TMaze-v0",
        kwargs={},
        wrappers=[{"path": "gymnasium.wrappers:RecordEpisodeStatistics", "kwargs": {}}],
        kind="registered",
    )
