"""evolstm: LSTM policies for partially observable tasks.

Neuroevolution (EvoTorch's distribution-based searchers, ESP/CoSyNE, Evolino) and
recurrent policy gradients share one network definition (:mod:`evolstm.network`),
one rollout engine (:mod:`evolstm.rollouts`) and one trainer loop (:mod:`evolstm.run`).

The modules are grouped by the data flow: the network (cells, encoders and heads, policies,
observation normalisation), rollouts (population evaluation in-process or on Ray, env
construction, policy-gradient collection, success tests, video) and the run (config, trainer,
checkpoints, loggers, agent registry, comparisons, the command line). The agent protocol
(:mod:`evolstm.agent`), the policy-gradient agents' shared learner (:mod:`evolstm.pg_agent`,
:mod:`evolstm.reward_norm`) and :mod:`evolstm.errors` stay at the top.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

__version__ = "0.1.0"

#: Modules of the flat layout (0.1.0 before the regroup) and the group each moved to.
MOVED_MODULES: dict[str, str] = {
    **dict.fromkeys(("cells", "spaces", "space_data", "policy", "obs_norm", "pg_model"), "network"),
    **dict.fromkeys(
        (
            "evaluation",
            "ray_evaluator",
            "env_factory",
            "pg_rollout",
            "pg_collector",
            "success",
            "video",
        ),
        "rollouts",
    ),
    **dict.fromkeys(
        (
            "trainer",
            "config",
            "cli",
            "compare",
            "compare_report",
            "loggers",
            "checkpoint",
            "registry",
            "safe_pickle",
        ),
        "run",
    ),
}


def current_module_name(name: str) -> str:
    """``"evolstm.policy"`` -> ``"evolstm.network.policy"``; other names unchanged (what
    checkpoints written before the regroup name is found where it lives now)."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[0] == __name__ and parts[1] in MOVED_MODULES:
        return ".".join([parts[0], MOVED_MODULES[parts[1]], *parts[1:]])
    return name


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import evolstm.policy`` (the old flat name) gives ``evolstm.network.policy`` itself,
    the same module object, with a DeprecationWarning: users' scripts and old console-script
    shims keep working. Python has no built-in module alias, hence this finder."""

    def find_spec(self, fullname: str, path: object, target: object = None):
        if current_module_name(fullname) == fullname:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = current_module_name(spec.name)
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2
        )
        module = importlib.import_module(new)
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the alias's spec on the real module: put its own back
        module.__spec__ = module.__spec__.loader_state


sys.meta_path.append(_MovedModuleFinder())
