"""The agent registry: optimisers are found through the ``evolstm.agents`` entry-point group.

A user's own agent plugs in exactly like the built-in ones: a package declares
``[project.entry-points."evolstm.agents"] myagent = "mypkg.module:MyAgent"``. Nothing in
``evolstm/`` imports ``agents/`` directly (data flows one way).

Listing and validating agents imports their modules, so an agent module imports no heavy
optimiser library (evotorch, ray, wandb, sb3_contrib) at module level: its docstring and
its ``Options`` (a pydantic model whose fields carry descriptions) are what
``evolstm agents`` shows (:func:`describe_agent`), and the library is imported only when
the agent is built.
"""

from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from evolstm.errors import ConfigError

if TYPE_CHECKING:
    from evolstm.agent import Agent

ENTRY_POINT_GROUP = "evolstm.agents"


def _agent_entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load(ep: EntryPoint) -> type[Agent]:
    """Import one entry point; raise ``ImportError``/``TypeError`` when it is not an agent."""
    from evolstm.agent import Agent

    obj = ep.load()
    if not (isinstance(obj, type) and issubclass(obj, Agent)):
        raise TypeError(f"{ep.value} is not a subclass of evolstm.agent.Agent")
    return obj


def _load_all() -> tuple[dict[str, type[Agent]], dict[str, str]]:
    loaded: dict[str, type[Agent]] = {}
    broken: dict[str, str] = {}
    for name, ep in sorted(_agent_entry_points().items()):
        try:
            loaded[name] = _load(ep)
        except Exception as err:  # a broken plugin must not hide the working agents
            broken[name] = f"{ep.value}: {type(err).__name__}: {err}"
    return loaded, broken


def available_agents() -> dict[str, type[Agent]]:
    """Every agent that imports cleanly, by name (sorted)."""
    return _load_all()[0]


def broken_agents() -> dict[str, str]:
    """Entry points that failed to import, by name, with the reason."""
    return _load_all()[1]


def get_agent(name: str) -> type[Agent]:
    """The agent class registered as ``name``; :class:`ConfigError` listing the valid names."""
    agents = available_agents()
    if name in agents:
        return agents[name]
    broken = broken_agents()
    if name in broken:
        raise ConfigError(f"agent.name {name!r} is registered but failed to load ({broken[name]})")
    valid = ", ".join(sorted(agents)) or "(none installed)"
    raise ConfigError(f"unknown agent.name {name!r}; available agents: {valid}")


def describe_agent(name: str, cls: type[Agent]) -> list[str]:
    """The lines ``evolstm agents`` prints for one agent: ``name family module:Class``, then
    its whole docstring and every option as ``key: type = default  description``."""
    lines = [f"{name}  {cls.family}  {cls.__module__}:{cls.__qualname__}"]
    doc = inspect.cleandoc(cls.__doc__ or "")
    lines += [f"    {line}".rstrip() for line in doc.splitlines()]
    fields = cls.Options.model_fields
    if fields:
        lines.append("    options:")
    for key, info in fields.items():
        kind = _type_name(info.annotation)
        default = info.get_default(call_default_factory=True)
        about = f"  {info.description}" if info.description else ""
        lines.append(f"      {key}: {kind} = {default!r}{about}")
    return lines


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
