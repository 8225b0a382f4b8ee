"""Building the task's envs from the config's ``env:`` section, in any process.

An :class:`EnvFactory` holds only strings and dicts, so it pickles (Ray ships it to its
actors) and resolves its import paths lazily in whichever process calls :meth:`make`.
Four ways to name an env (see :func:`resolve_env`):

* a registered gymnasium id (``evolstm/TMaze-v0``, ``CartPole-v1``);
* gymnasium's ``"module:EnvId"`` form: import ``module`` (which registers ``EnvId``);
* ``"module:Class"``: a :class:`gymnasium.Env` subclass, called with ``kwargs``;
* ``"module:factory"``: a callable returning an env, called with ``kwargs``.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from evolstm.errors import ConfigError

EnvKind = Literal["registered", "creator"]
OnNan = Literal["error", "penalize"]
# The bound on an episode of an env that declares no max_episode_steps (one warning when hit).
DEFAULT_MAX_EPISODE_STEPS = 100_000

OTHER_FORMS = (
    "or any registered gymnasium id, gymnasium's 'module:EnvId' form, "
    "'module:Class' (a gymnasium.Env subclass) or 'module:factory' (a callable returning an env)"
)


def _register_task_suite() -> None:
    import envs  # noqa: F401  (importing registers the evolstm/ tasks with gymnasium)


def import_path(path: str) -> Any:
    """The object at ``"package.module:attribute"`` (``ImportError``/``AttributeError``)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ImportError(f"{path!r} is not of the form 'module:attribute'")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


# gymnasium's wrappers whose ``gymnasium.wrappers.vector`` namesake acts on each slot as the
# single wrapper does (stateless, per-element; same constructor arguments).
GYMNASIUM_VECTOR_FORMS = frozenset(
    {"ClipAction", "RescaleAction", "FlattenObservation", "DtypeObservation"}
)


def vector_form(wrapper: Any) -> Any | None:
    """The vector-env form of a single-env wrapper class, or ``None``.

    A wrapper declares it as the class attribute ``vector_form`` (the class itself or a
    ``"module:Class"`` path), as evolstm's own wrappers (``envs.wrappers``) do; gymnasium's
    stateless wrappers of :data:`GYMNASIUM_VECTOR_FORMS` map to their vector namesakes. The
    vector form over N slots must equal ``SyncVectorEnv`` of N single forms.
    """
    form = getattr(wrapper, "vector_form", None)
    if isinstance(form, str):
        return import_path(form)
    if form is not None:
        return form
    name = getattr(wrapper, "__name__", "")
    if name in GYMNASIUM_VECTOR_FORMS and getattr(wrapper, "__module__", "").startswith(
        "gymnasium.wrappers"
    ):
        import gymnasium.wrappers.vector

        return getattr(gymnasium.wrappers.vector, name)
    return None


@dataclass
class EnvFactory:
    """Makes the task's single and vector envs; picklable (strings and dicts only).

    :param id: the env as named in the config (see the module docstring).
    :param kwargs: passed to the env constructor.
    :param wrappers: ``[{"path": "module:Wrapper", "kwargs": {...}}, ...]``, applied in order.
    :param kind: ``"registered"`` (through gymnasium's registry) or ``"creator"`` (an env
        class or factory called directly); set by :func:`resolve_env`.
    :param on_nan: a non-finite observation or reward is an error (``"error"``), or ends that
        episode scored as the evaluation's worst return (``"penalize"``).
    :param max_episode_steps: the rollout engine ends (truncates) longer episodes; ``None``:
        the registered limit, else :data:`DEFAULT_MAX_EPISODE_STEPS`.
    """

    id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    wrappers: list[dict[str, Any]] = field(default_factory=list)
    kind: EnvKind = "registered"
    on_nan: OnNan = "error"
    max_episode_steps: int | None = None

    def episode_step_limit(self) -> tuple[int, bool]:
        """``(limit, chosen)``: the step bound of an episode and whether the user or the
        env's registration chose it (``False``: the default, hitting it is worth a warning)."""
        if self.max_episode_steps is not None:
            return self.max_episode_steps, True
        spec = self.env_spec()
        if spec is not None and spec.max_episode_steps is not None:
            return int(spec.max_episode_steps), True
        return DEFAULT_MAX_EPISODE_STEPS, False

    def make(self) -> gym.Env:
        """One env with the wrappers applied in order."""
        _register_task_suite()
        try:
            if self.kind == "creator":
                env = import_path(self.id)(**self.kwargs)
            else:
                env = gym.make(self.id, **self.kwargs)
        except TypeError as err:
            if not _rejects_kwargs(err):
                raise
            raise ConfigError(f"env.kwargs {self.kwargs!r} rejected by {self.id!r}: {err}") from err
        for i, wrapper in enumerate(self.wrappers):
            kwargs = wrapper.get("kwargs", {})
            try:
                env = import_path(wrapper["path"])(env, **kwargs)
            except TypeError as err:
                if not _rejects_kwargs(err):
                    raise
                raise ConfigError(
                    f"env.wrappers[{i}].kwargs {kwargs!r} rejected by wrapper "
                    f"{wrapper['path']!r}: {err}"
                ) from err
        return env

    def env_spec(self) -> gym.envs.registration.EnvSpec | None:
        """The registry entry of a registered id (``None`` for an env class or factory)."""
        if self.kind != "registered":
            return None
        _register_task_suite()
        module_name, sep, env_name = self.id.partition(":")
        if sep:
            importlib.import_module(module_name)
        return gym.spec(env_name if sep else self.id)

    @property
    def reward_threshold(self) -> float | None:
        """The registered ``reward_threshold`` (the task counts as solved at it), if any."""
        spec = self.env_spec()
        return None if spec is None else spec.reward_threshold

    def sync_reason(self) -> str | None:
        """Why :meth:`make_vector` falls back to ``SyncVectorEnv`` (``None``: it runs the
        task's native vector env, with the vector form of every wrapper)."""
        spec = self.env_spec()
        if spec is None or spec.vector_entry_point is None:
            return "it has no native vector env (no vector_entry_point registered)"
        for wrapper in self.wrappers:
            if vector_form(import_path(wrapper["path"])) is None:
                return (
                    f"wrapper {wrapper['path']!r} has no vector form (declare one as its "
                    "class attribute `vector_form`)"
                )
        return None

    def make_vector(self, num_envs: int) -> gym.vector.VectorEnv:
        """``num_envs`` slots: the task's native batch env when it is registered with a
        ``vector_entry_point`` and every configured wrapper has a vector form
        (:func:`vector_form`; those are applied to it in order), else a ``SyncVectorEnv``
        of :meth:`make` (:meth:`sync_reason` says why). Autoreset must be gymnasium's
        ``NEXT_STEP`` (the rollout engine's convention); anything else is a
        :class:`ConfigError`."""
        if self.sync_reason() is None:
            vec = gym.make_vec(
                self.id, num_envs, vectorization_mode="vector_entry_point", **self.kwargs
            )
            for wrapper in self.wrappers:
                form = vector_form(import_path(wrapper["path"]))
                assert form is not None  # sync_reason() checked every wrapper
                vec = form(vec, **wrapper.get("kwargs", {}))
        else:
            vec = SyncVectorEnv([self.make for _ in range(num_envs)])
        mode = vec.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if AutoresetMode(mode) is not AutoresetMode.NEXT_STEP:
            vec.close()
            raise ConfigError(
                f"env.id {self.id!r}: its vector env declares autoreset_mode "
                f"{AutoresetMode(mode).name}; evolstm needs NEXT_STEP (gymnasium's default)"
            )
        return vec

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """The single env's ``(observation_space, action_space)``.

        A constructor that rejects ``env.kwargs``, or a wrapper that rejects its ``kwargs``, is
        a :class:`ConfigError` naming that key (see :meth:`make`).
        """
        env = self.make()
        try:
            return env.observation_space, env.action_space
        finally:
            env.close()


def _rejects_kwargs(err: TypeError) -> bool:
    """Whether a constructor's ``TypeError`` is about its keyword arguments."""
    return "keyword argument" in str(err) or "positional argument" in str(err)


def _normalise_wrappers(wrappers: Sequence[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, wrapper in enumerate(wrappers):
        key = f"env.wrappers[{i}]"
        if isinstance(wrapper, str):
            path, kwargs = wrapper, {}
        elif isinstance(wrapper, Mapping) and "path" in wrapper:
            path, kwargs = wrapper["path"], dict(wrapper.get("kwargs") or {})
        elif hasattr(wrapper, "path"):
            path, kwargs = wrapper.path, dict(getattr(wrapper, "kwargs", None) or {})
        else:
            raise ConfigError(
                f"{key}: expected 'module:Wrapper' or {{path: 'module:Wrapper', kwargs: {{...}}}}, "
                f"got {wrapper!r}"
            )
        try:
            obj = import_path(path)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"{key}: cannot import wrapper {path!r} ({err})") from err
        if not callable(obj):
            raise ConfigError(f"{key}: {path!r} is not callable (expected a gymnasium.Wrapper)")
        out.append({"path": path, "kwargs": kwargs})
    return out


def _resolve_colon_form(env_id: str) -> EnvKind:
    module_name, _, attr = env_id.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        message = f"env.id {env_id!r}: cannot import module {module_name!r} ({err})"
        raise ConfigError(message) from err
    if attr in gym.registry:
        return "registered"
    obj = getattr(module, attr, None)
    if obj is None:
        raise ConfigError(
            f"env.id {env_id!r}: module {module_name!r} neither registers a gymnasium id "
            f"{attr!r} nor defines {attr!r}"
        )
    if isinstance(obj, type) and not issubclass(obj, gym.Env):
        raise ConfigError(f"env.id {env_id!r}: class {attr!r} is not a gymnasium.Env subclass")
    if not callable(obj):
        raise ConfigError(
            f"env.id {env_id!r}: {attr!r} is neither a gymnasium.Env subclass nor a callable"
        )
    return "creator"


def resolve_env(
    env_id: str, kwargs: Mapping[str, Any] | None = None, wrappers: Sequence[Any] = ()
) -> EnvFactory:
    """Validate the ``env:`` section and return its :class:`EnvFactory`.

    :param env_id: a registered id, ``"module:EnvId"``, ``"module:Class"`` or ``"module:factory"``.
    :param kwargs: constructor keyword arguments.
    :param wrappers: ``"module:Wrapper"`` strings or ``{path, kwargs}`` mappings.
    :raises ConfigError: unknown id, unimportable module, wrapper or a non-env object.
    """
    import envs

    if not isinstance(env_id, str) or not env_id:
        raise ConfigError(f"env.id must be a non-empty string, got {env_id!r}")
    if ":" in env_id:
        kind = _resolve_colon_form(env_id)
    elif env_id in gym.registry:
        kind = "registered"
    else:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"unknown env.id {env_id!r}{hint}; evolstm tasks: {', '.join(envs.task_ids())}; "
            + OTHER_FORMS
        )
    return EnvFactory(
        id=env_id,
        kwargs=dict(kwargs or {}),
        wrappers=_normalise_wrappers(wrappers),
        kind=kind,
    )
