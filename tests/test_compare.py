"""``evolstm compare``: the compare file's validation, the run folders it creates, the
aggregates in ``compare.json``, crash handling and the CLI's exit codes."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console

from evolstm.errors import ConfigError
from evolstm.run import trainer
from evolstm.run.cli import main
from evolstm.run.compare import COMPARE_REPORT, load_comparison, run_comparison
from evolstm.run.config import load_config
from tests.test_cli import _assert_one_line_error, _run_module
from tests.test_trainer import ENV_ID

BASE = {
    "name": "base",
    "env": {"id": ENV_ID},
    "agent": {"name": "fake", "sigma": 0.25},
    "budget": {"iterations": 3},
    "eval": {"every": 2, "episodes": 3},
    "logging": {"wandb": {"mode": "disabled", "group": "base-group"}, "console": False},
}


def _compare_file(tmp_path: Path, **spec) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    data = {
        "name": "cmp",
        "base": "base.yaml",
        "seeds": [0, 1],
        # In turn, in this process: the fake agent is registered here only.
        "parallel": False,
        "variants": {"a": {}, "b": {"agent": {"name": "fake", "popsize": 4}}},
        **spec,
    }
    path = tmp_path / "compare.yaml"
    path.write_text(
        yaml.safe_dump({k: v for k, v in data.items() if v is not None}, sort_keys=False)
    )
    return path


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.mark.parametrize(
    ("spec", "starts"),
    [
        (
            {"variant": {"a": {}}},
            "unknown key 'variant' in compare file",
        ),
        (
            {"variants": {"a": {}, "b": {"polcy.hidden": 4}}},
            "variant 'b': unknown key 'polcy'; valid keys at the top level: agent,",
        ),
        (
            {"variants": {"a": {}, "b": {"agent": {"name": "fake", "popsze": 4}}}},
            "variant 'b': unknown key 'agent.popsze'",
        ),
        (
            {"variants": {"a": {}, "b": {"agent": {"name": "ppoo"}}}},
            "variant 'b': unknown agent.name 'ppoo'; available agents: fake",
        ),
        ({"variants": {"a": {"seed": 3}}}, "variant 'a': 'seed' cannot be overridden"),
        ({"variants": {"a b": {}}}, "variants: label 'a b': expected letters"),
        ({"variants": {"a": [1]}}, "variant 'a': expected a mapping of overrides"),
        ({"variants": {}}, "variants: expected a mapping of label -> overrides"),
        ({"base": None}, "missing required key 'base'"),
        ({"base": "nope.yaml"}, "config file not found"),
        ({"seeds": [0, -1]}, "seeds: expected integers >= 0, got -1"),
        ({"seeds": [1, 1]}, "seeds: each seed once"),
        ({"name": "has space"}, "name: expected letters"),
    ],
)
def test_compare_file_errors_are_one_line_and_nothing_runs(tmp_path, fake_agent, spec, starts):
    path = _compare_file(tmp_path, **spec)
    with pytest.raises(ConfigError) as err:
        load_comparison(path)
    assert str(err.value).startswith(starts), str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_lists_the_valid_keys(tmp_path, fake_agent):
    with pytest.raises(
        ConfigError, match=r"valid keys: name, base, config, seeds, env_steps, parallel, variants$"
    ):
        load_comparison(_compare_file(tmp_path, varients={}))


def test_typo_in_the_last_variant_fails_before_the_first_run(tmp_path, fake_agent, capsys):
    variants = {"a": {}, "b": {}, "c": {"budget.iterashuns": 2}}
    path = _compare_file(tmp_path, variants=variants)
    assert main(["compare", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    _assert_one_line_error(capsys.readouterr().err, "variant 'c': unknown key 'budget.iterashuns'")
    assert not (tmp_path / "runs").exists()


def test_command_line_may_not_set_seed(tmp_path, fake_agent):
    with pytest.raises(ConfigError, match=r"^command line: 'seed' cannot be overridden"):
        load_comparison(_compare_file(tmp_path), ["seed=4"])


def test_override_order_agent_replacement_and_group(tmp_path, fake_agent):
    variants = {
        "keep": {},
        "replace": {"agent": {"name": "fake", "popsize": 4}},
        "dotted": {"agent.popsize": 5},
        "nested": {"eval": {"episodes": 7}, "budget.iterations": 9},
    }
    path = _compare_file(tmp_path, variants=variants, seeds=[2])
    comparison = load_comparison(path, ["budget.iterations=6", "agent.sigma=0.75"])
    cfg = {label: runs[0].cfg for label, runs in comparison.runs.items()}
    assert list(cfg) == list(variants)
    # An `agent:` mapping replaces the section (sigma back to its default 0.5) ...
    assert (cfg["replace"].agent.options["popsize"], cfg["replace"].agent.options["sigma"]) == (
        4,
        0.5,
    )
    # ... a dotted key sets one value; the command line applies to the base.
    assert (cfg["dotted"].agent.options["popsize"], cfg["dotted"].agent.options["sigma"]) == (
        5,
        0.75,
    )
    assert cfg["keep"].agent.options == {"popsize": 3, "episodes": 2, "sigma": 0.75}
    # Nested mappings merge into their section; the variant's keys win over the command line.
    assert (cfg["nested"].eval.every, cfg["nested"].eval.episodes) == (2, 7)
    assert [c.budget.iterations for c in cfg.values()] == [6, 6, 6, 9]
    # The base file's own group is replaced by the comparison's name; name/seed per run.
    assert {c.logging.wandb.group for c in cfg.values()} == {"cmp"}
    assert [c.name for c in cfg.values()] == [f"cmp-{label}-s2" for label in variants]
    assert {c.seed for c in cfg.values()} == {2}

    mine = load_comparison(path, ["logging.wandb.group=mine"])
    assert {runs[0].cfg.logging.wandb.group for runs in mine.runs.values()} == {"mine"}


def test_inline_config_without_base(tmp_path, fake_agent):
    inline = {k: v for k, v in BASE.items() if k != "name"}
    comparison = load_comparison(_compare_file(tmp_path, base=None, config=inline))
    assert [r.cfg.agent.options["sigma"] for r in comparison.runs["a"]] == [0.25, 0.25]
    # A group written in the compare file itself is the user's choice: kept.
    assert comparison.runs["a"][0].cfg.logging.wandb.group == "base-group"


def test_two_variants_two_seeds_write_four_runs_and_their_aggregates(tmp_path, fake_agent, capsys):
    path = _compare_file(tmp_path)
    runs_root = tmp_path / "runs"
    argv = ["compare", str(path), "budget.iterations=2", "--runs-dir", str(runs_root)]
    assert main(argv) == 0
    (folder,) = runs_root.iterdir()
    assert re.fullmatch(r"cmp-\d{8}-\d{6}", folder.name)
    run_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    assert len(run_dirs) == 4

    summaries: dict[str, list[dict]] = {"a": [], "b": []}
    for label in ("a", "b"):
        for seed in (0, 1):
            (run_dir,) = [p for p in run_dirs if p.name.startswith(f"cmp-{label}-s{seed}-")]
            cfg = load_config(run_dir / "config.yaml")
            assert (cfg.name, cfg.seed, cfg.logging.wandb.group) == (
                f"cmp-{label}-s{seed}",
                seed,
                "cmp",
            )
            assert cfg.budget.iterations == 2
            assert cfg.agent.options["popsize"] == (3 if label == "a" else 4)
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
            assert len(lines) == 2
            summaries[label].append(json.loads((run_dir / "summary.json").read_text()))

    out = capsys.readouterr().out
    report = json.loads((folder / COMPARE_REPORT).read_text())
    assert [v["label"] for v in report["variants"]] == ["a", "b"]
    for variant in report["variants"]:
        own = summaries[variant["label"]]
        returns = np.array([s["eval_return_mean"] for s in own])
        assert variant["agent"] == "fake" and variant["seeds"] == [0, 1]
        assert [r["summary"] for r in variant["runs"]] == own
        assert [r["seed"] for r in variant["runs"]] == [0, 1]
        assert variant["finished"] == 2
        assert variant["eval_return_mean"]["mean"] == pytest.approx(returns.mean(), abs=1e-12)
        assert variant["eval_return_mean"]["std"] == pytest.approx(returns.std(), abs=1e-12)
        env_steps = np.mean([s["env_steps"] for s in own])
        assert variant["env_steps_mean"] == pytest.approx(env_steps)
        assert variant["wall_time_mean"] == pytest.approx(np.mean([s["wall_time"] for s in own]))
        assert variant["solved"] == sum(bool(s["solved"]) for s in own)
        # The printed table carries the same numbers.
        ret = variant["eval_return_mean"]
        row = f"{ret['mean']:.4g} ± {ret['std']:.3g}"
        assert re.search(rf"│ {variant['label']}\s+│ fake\s+│\s+0, 1 │\s+{re.escape(row)} │", out)
        assert f"{env_steps:,.0f}" in out and f"{variant['solved']}/2" in out


def test_a_crashed_run_keeps_the_others_and_exits_1(tmp_path, fake_agent, monkeypatch, capsys):
    real_train = trainer.train

    def crash_on_b_seed_0(cfg, **kwargs):
        if cfg.name == "cmp-b-s0":
            raise RuntimeError("boom")
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(trainer, "train", crash_on_b_seed_0)
    path = _compare_file(tmp_path)
    assert main(["compare", str(path), "budget.iterations=1", "--runs-dir", str(tmp_path)]) == 1
    assert "1 run(s) failed" in capsys.readouterr().err
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("cmp-")]
    report = json.loads((folder / COMPARE_REPORT).read_text())
    a, b = report["variants"]
    assert (a["finished"], b["finished"]) == (2, 1)
    assert b["runs"][0] == {"seed": 0, "error": "RuntimeError: boom"}
    summary = json.loads((Path(b["runs"][1]["run_dir"]) / "summary.json").read_text())
    assert b["runs"][1]["summary"] == summary
    assert b["eval_return_mean"] == {"mean": summary["eval_return_mean"], "std": 0.0}


def test_an_interrupt_stops_but_keeps_what_finished(tmp_path, fake_agent, monkeypatch):
    real_train = trainer.train
    calls = []

    def interrupt_second(cfg, **kwargs):
        calls.append(cfg.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(trainer, "train", interrupt_second)
    comparison = load_comparison(_compare_file(tmp_path), ["budget.iterations=1"])
    with pytest.raises(KeyboardInterrupt):
        run_comparison(comparison, runs_root=tmp_path / "runs", console=_quiet())
    assert calls == ["cmp-a-s0", "cmp-a-s1"]
    (folder,) = (tmp_path / "runs").iterdir()
    a, b = json.loads((folder / COMPARE_REPORT).read_text())["variants"]
    assert [r["seed"] for r in a["runs"]] == [0] and b["runs"] == []
    assert Path(a["runs"][0]["run_dir"], "summary.json").is_file()


def test_bad_ray_address_is_a_config_error_before_any_folder(tmp_path, fake_agent):
    comparison = load_comparison(_compare_file(tmp_path))
    with pytest.raises(ConfigError, match=r"^ray address 'nowhere'"):
        run_comparison(comparison, ray_address="nowhere", runs_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_cli_bad_compare_file_exits_2_with_one_line(tmp_path):
    path = _compare_file(tmp_path, varaints={"a": {}})
    done = _run_module("compare", str(path), "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode == 2
    _assert_one_line_error(done.stderr, "unknown key 'varaints' in compare file")
    assert "valid keys: name, base, config, seeds, env_steps, parallel, variants" in done.stderr
    assert not (tmp_path / "runs").exists()
