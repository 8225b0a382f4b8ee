"""The training config: YAML + ``key.sub=value`` overrides, validated into typed objects.

Every key has a default except ``env.id`` and ``agent.name``. Unknown keys, wrong types,
unknown agents and unknown envs are :class:`~evolstm.errors.ConfigError` s whose one-line
message names the key, the bad value and the valid choices. The keys are a public
contract (DESIGN.md, "The user-facing contract").
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evolstm.errors import ConfigError

if TYPE_CHECKING:
    from evolstm.agent import Agent, AgentOptions

DEFAULT_ENV_STEPS = 2_000_000

StrictInt = Annotated[int, Field(strict=True)]
StrictBool = Annotated[bool, Field(strict=True)]
Cell = Literal["lstm", "peephole", "conv_peephole", "gru"]


def check_ray_address(address: str | None) -> str | None:
    """``None`` (in-process), ``"local"``, ``"auto"``, ``"ray://..."`` or ``"host:port"``."""
    if address is None or address in ("local", "auto"):
        return address
    if address.startswith("ray://") or re.fullmatch(r"[\w.-]+:\d+", address):
        return address
    raise ValueError("expected null, 'local', 'auto', 'ray://host:port' or 'host:port'")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class WrapperConfig(_Section):
    """One env wrapper: an import path and its keyword arguments."""

    path: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class EnvConfig(_Section):
    id: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    wrappers: list[WrapperConfig] = Field(default_factory=list)
    # error: a NaN/inf observation or reward stops the run naming env, member and step;
    # penalize: that episode ends and scores as the generation's worst return
    on_nan: Literal["error", "penalize"] = "error"
    # episodes longer than this are truncated (null: the registered limit, else 100,000)
    max_episode_steps: StrictInt | None = Field(None, ge=1)

    @field_validator("wrappers", mode="before")
    @classmethod
    def _path_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"path": w} if isinstance(w, str) else w for w in value]
        return value


class PolicyConfig(_Section):
    cell: Cell = "lstm"
    hidden: StrictInt = Field(16, ge=1)
    layers: StrictInt = Field(1, ge=1)
    memory: StrictBool = True
    readout_hidden: list[StrictInt] = Field(
        default_factory=list,
        description="widths of ReLU layers between the recurrent core and the linear readout "
        "(empty: a linear readout; ESP and Evolino need that)",
    )


class AgentConfig(BaseModel):
    """``name`` picks the agent; every other key is an agent option (see :meth:`options`)."""

    model_config = ConfigDict(extra="allow")

    name: str

    @property
    def options(self) -> dict[str, Any]:
        """The agent-specific keys (checked by its ``Options`` in :func:`validate_config`)."""
        return dict(self.model_extra or {})


class BudgetConfig(_Section):
    """Training stops at whichever budget is spent first; ``env_steps`` 2M when none is set.
    ``stop_when_solved`` also stops at the first evaluation that meets the task's success
    test (the trainer's ``solved``)."""

    env_steps: StrictInt | None = Field(None, ge=1)
    iterations: StrictInt | None = Field(None, ge=1)
    seconds: float | None = Field(None, gt=0)
    stop_when_solved: StrictBool = False

    @model_validator(mode="after")
    def _at_least_one(self) -> BudgetConfig:
        if self.env_steps is None and self.iterations is None and self.seconds is None:
            self.env_steps = DEFAULT_ENV_STEPS
        return self

    def spent(self, *, iterations: int, env_steps: int, seconds: float) -> bool:
        """True once any configured budget is reached."""
        return (
            (self.iterations is not None and iterations >= self.iterations)
            or (self.env_steps is not None and env_steps >= self.env_steps)
            or (self.seconds is not None and seconds >= self.seconds)
        )


class EvalConfig(_Section):
    """``success_on_change`` runs the task's success test after every iteration in which the
    agent's policy changed (Gomez et al. test each generation's best network), so a run with
    ``budget.stop_when_solved`` ends at the first policy that passes it."""

    every: StrictInt = Field(10, ge=1)
    episodes: StrictInt = Field(32, ge=1)
    success_on_change: StrictBool = False


class CheckpointConfig(_Section):
    every: StrictInt = Field(10, ge=1)


class RayConfig(_Section):
    address: str | None = None
    num_workers: StrictInt = Field(0, ge=0)
    # a shard not back after this long counts as lost: its actor is replaced, the shard re-run
    shard_timeout_s: float = Field(600.0, gt=0)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return check_ray_address(value)


class WandbConfig(_Section):
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "evolstm"
    group: str | None = None
    # Seconds W&B may take to start; online without a reachable server then falls back to
    # offline with one warning.
    init_timeout: float = Field(30.0, gt=0)


class LoggingConfig(_Section):
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    console: Annotated[bool, Field(strict=True)] = True


class RunConfig(_Section):
    """A whole training run (the YAML file's top level)."""

    name: str = "run"
    seed: StrictInt = Field(0, ge=0)
    env: EnvConfig
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    agent: AgentConfig
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError("expected letters, digits, '.', '_' or '-' (it names the run folder)")
        return value

    def to_yaml_dict(self) -> dict[str, Any]:
        """The resolved config (defaults filled in, agent options included) as plain data;
        :func:`validate_config` accepts it back unchanged."""
        return self.model_dump(mode="json")


# -- validation errors -> one line -----------------------------------------------------------


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _model_at(model: type[BaseModel] | None, loc: Sequence[Any]) -> type[BaseModel] | None:
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = None if field is None else _model_in(field.annotation)
    return model


def _key(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(
    err: Mapping[str, Any], root: type[BaseModel], prefix: tuple[str, ...], extra_keys: tuple
) -> str:
    loc = tuple(err["loc"])
    key = _key(prefix + loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        valid = sorted([*(parent.model_fields if parent else ()), *extra_keys])
        where = f"under {_key(prefix + loc[:-1])!r}" if prefix + loc[:-1] else "at the top level"
        return f"unknown key {key!r}; valid keys {where}: {', '.join(valid)}"
    if kind == "missing":
        return f"missing required key {key!r}"
    if kind == "model_type":
        section = _model_at(root, loc)
        keys = ", ".join(section.model_fields) if section else ""
        return f"{key}: expected a mapping (keys: {keys}), got {_short(err.get('input'))}"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{key}: {message}, got {_short(err.get('input'))}"


def _one_line(
    error: pydantic.ValidationError,
    root: type[BaseModel],
    prefix: tuple[str, ...] = (),
    extra_keys: tuple = (),
) -> str:
    return "; ".join(_describe(e, root, prefix, extra_keys) for e in error.errors())


# -- loading ---------------------------------------------------------------------------------


def agent_options(agent_cls: type[Agent], agent: AgentConfig) -> AgentOptions:
    """The ``agent:`` keys besides ``name`` validated by ``agent_cls.Options`` (with defaults)."""
    try:
        return agent_cls.Options.model_validate(agent.options)
    except pydantic.ValidationError as err:
        message = _one_line(err, agent_cls.Options, ("agent",), ("name",))
        raise ConfigError(f"{message} (agent {agent.name!r})") from None


def resolve_agent(cfg: RunConfig) -> tuple[RunConfig, type[Agent], AgentOptions]:
    """Look ``agent.name`` up in the registry and validate its options.

    :returns: ``cfg`` with the options' defaults filled in, the agent class, its options.
    """
    from evolstm.run.registry import get_agent

    agent_cls = get_agent(cfg.agent.name)
    options = agent_options(agent_cls, cfg.agent)
    if cfg.policy.readout_hidden and getattr(agent_cls, "evolve_readout", True) is False:
        raise ConfigError(
            f"policy.readout_hidden: {cfg.policy.readout_hidden} is not for agent "
            f"{cfg.agent.name!r}, which computes a linear readout from the cells (use [])"
        )
    agent = AgentConfig(name=cfg.agent.name, **options.model_dump(mode="json"))
    return cfg.model_copy(update={"agent": agent}), agent_cls, options


def validate_config(
    data: Mapping[str, Any], *, check_agent: bool = True, check_env: bool = True
) -> RunConfig:
    """Validate plain config data into a :class:`RunConfig`.

    :param check_agent: look the agent up in the registry and validate (and fill in the
        defaults of) its options with the agent's ``Options`` model.
    :param check_env: resolve ``env`` with :func:`evolstm.rollouts.env_factory.resolve_env`.
    :raises ConfigError: with a one-line message.
    """
    try:
        cfg = RunConfig.model_validate(data)
    except pydantic.ValidationError as err:
        raise ConfigError(_one_line(err, RunConfig)) from None
    if check_agent:
        cfg = resolve_agent(cfg)[0]
    if check_env:
        from evolstm.rollouts.env_factory import resolve_env

        resolve_env(cfg.env.id, cfg.env.kwargs, [w.model_dump() for w in cfg.env.wrappers])
    return cfg


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``data`` with ``key.sub=value`` overrides set (values parsed as YAML)."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: cannot parse {raw!r} as YAML ({err})") from None
        section_for(out, parts, item)[parts[-1]] = value
    return out


def section_for(data: dict, parts: Sequence[str], label: str) -> dict:
    """The (created if missing) mapping that holds key ``parts[-1]`` under ``parts[:-1]``;
    ``label`` names the override in the error when a section along the way is a value."""
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            section = ".".join(parts[: depth + 1])
            raise ConfigError(f"override {label!r}: {section!r} is a value, not a section")
        node = child
    return node


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file's top-level mapping (:class:`ConfigError` when missing or malformed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"invalid YAML in {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    return data


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML config, apply ``key.sub=value`` overrides and validate everything.

    :raises ConfigError: missing file, bad YAML, malformed override, unknown key, wrong
        type, unknown agent or agent option, unknown env.
    """
    return validate_config(apply_overrides(read_yaml(path), overrides))
