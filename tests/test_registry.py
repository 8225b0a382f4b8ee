"""Agents are listed and validated from their entry points without importing the optimiser
libraries; ``evolstm agents`` shows each agent's whole description and every option."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

from evolstm.run.cli import main
from evolstm.run.registry import available_agents

HEAVY = ("evotorch", "ray", "wandb", "sb3_contrib", "torch._dynamo", "torch._inductor")


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY))


def test_listing_and_validating_agents_imports_no_optimiser_library():
    listed = _modules_after(
        "from evolstm.run.cli import main\nimport contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    main(['agents'])"
    )
    assert "agents.es" in listed
    assert _heavy(listed) == []
    validated = _modules_after(
        "from evolstm.run.config import validate_config\n"
        "validate_config({'env': {'id': 'evolstm/CartPoleNoVel-v0'},"
        " 'agent': {'name': 'pgpe', 'popsize': 8}})"
    )
    assert _heavy(validated) == []


def test_agents_lists_whole_description_and_every_option(capsys):
    assert main(["agents"]) == 0
    blocks: dict[str, str] = {}
    for line in capsys.readouterr().out.splitlines():
        if line and not line.startswith(" "):
            head = line
            blocks[head] = ""
        blocks[head] += line + "\n"
    agents = available_agents()
    assert {"pgpe", "cmaes", "snes", "xnes", "cem", "cosyne"} <= set(agents)
    for name, cls in agents.items():
        head = f"{name}  {cls.family}  {cls.__module__}:{cls.__qualname__}"
        block = blocks[head]
        for line in inspect.cleandoc(cls.__doc__ or "").splitlines():
            assert line.strip() in block, (name, line)
        for key, field in cls.Options.model_fields.items():
            assert field.description, f"{name}: option {key} has no description"
            assert f"      {key}: " in block and field.description in block, (name, key)
