"""The data-flow layout of ``evolstm/`` and what keeps the flat names of 0.1.0 working."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import numpy as np
import pytest

import evolstm
from evolstm.network.obs_norm import RunningStats
from evolstm.run import safe_pickle


@pytest.mark.parametrize(("old", "group"), sorted(evolstm.MOVED_MODULES.items()))
def test_a_flat_name_imports_the_moved_module_itself(old: str, group: str) -> None:
    new = importlib.import_module(f"evolstm.{group}.{old}")
    moved = re.escape(f"evolstm.{old} moved to evolstm.{group}.{old}")
    with pytest.warns(DeprecationWarning, match=moved):
        sys.modules.pop(f"evolstm.{old}", None)
        alias = importlib.import_module(f"evolstm.{old}")
    assert alias is new
    assert new.__spec__.name == new.__name__ == f"evolstm.{group}.{old}"
    assert new.__spec__.origin.endswith(f"evolstm/{group}/{old}.py")


def test_the_console_script_shim_of_an_old_install_still_runs() -> None:
    # what an entry-point script generated before the regroup does: `from evolstm.cli import main`
    out = subprocess.run(
        [sys.executable, "-c", "from evolstm.cli import main; raise SystemExit(main(['envs']))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "evolstm/CartPoleNoVel-v0" in out.stdout


def test_names_outside_the_moved_modules_are_left_alone() -> None:
    assert evolstm.current_module_name("evolstm.obs_norm") == "evolstm.network.obs_norm"
    assert evolstm.current_module_name("evolstm.trainer.train") == "evolstm.run.trainer.train"
    for name in ("evolstm.agent", "evolstm.network.policy", "evolstmx.policy", "torch.nn"):
        assert evolstm.current_module_name(name) == name
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("evolstm.no_such_module")


def test_a_checkpoint_that_names_the_flat_module_loads_under_the_new_allowlist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stats = RunningStats()
    stats.update(np.array([[1.0, 2.0], [3.0, 5.0]]))
    # pickle records a class by its __module__: as 0.1.0 wrote it
    monkeypatch.setattr(RunningStats, "__module__", "evolstm.obs_norm")
    data = safe_pickle.dumps({"stats": stats})
    monkeypatch.undo()
    assert b"evolstm.obs_norm" in bytes(data["pickle"].numpy())
    assert b"evolstm.network.obs_norm" not in bytes(data["pickle"].numpy())
    resolved: set[str] = set()
    back = safe_pickle.loads(data, {"evolstm.network.obs_norm.RunningStats"}, resolved)
    assert type(back["stats"]) is RunningStats
    assert resolved == {"evolstm.network.obs_norm.RunningStats"}
    np.testing.assert_array_equal(back["stats"].mean, stats.mean)
    with pytest.raises(safe_pickle.UnsafePickleError, match=re.escape("evolstm.network.obs_norm")):
        safe_pickle.loads(data, {"evolstm.agent.Agent"})


def test_file_format_tags_did_not_move_with_the_modules() -> None:
    # policy.pt and checkpoints written by 0.1.0 carry these tags; a loader rejects any other
    from evolstm.network.policy import POLICY_FORMAT
    from evolstm.run.checkpoint import FORMAT

    assert (POLICY_FORMAT, FORMAT) == ("evolstm.policy/2", "evolstm.checkpoint/1")
