"""The agent registry: optimisers are found through the ``evolstm.agents`` entry-point group.

A user's own agent plugs in exactly like the built-in ones: a package declares
``[project.entry-points."evolstm.agents"] myagent = "mypkg.module:MyAgent"``. Nothing in
``evolstm/`` imports ``agents/`` directly (data flows one way).
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

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
