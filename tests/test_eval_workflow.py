"""Evaluation rules in the workflow: asking for one figure plans only what it needs (dry run), and the
ten named targets run end to end on fake inputs in the contract formats, with the HTML report.

The workflow is copied to a temporary folder so that the tests leave no `.snakemake` state in the
repository. Rule scripts that do not exist yet (other stages under construction) get an empty
placeholder in the copy: a dry run only needs the file to exist. The end-to-end test runs only the
evaluation rules (`--allowed-rules`) on inputs written by `tests/fakes/evaluation.py`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EVAL_RULES = [
    "table1",
    "table2",
    "fig_dropout",
    "fig_tsne",
    "fig_heatmap",
    "table5",
    "survival_table",
    "fig_td_auc",
    "fig_calibration",
    "fig_km",
    "claims",
]


def _copy_workflow(dest: Path) -> Path:
    """Snakefile, rules, report, scripts, config and envs in ``dest``; ``src`` linked."""
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    for sub in ("workflow/rules", "workflow/report", "config", "envs"):
        shutil.copytree(REPO / sub, dest / sub)
    scripts = dest / "workflow" / "scripts"
    scripts.mkdir(parents=True)
    for script in (REPO / "workflow" / "scripts").glob("*.py"):
        shutil.copy(script, scripts / script.name)
    (scripts / "haf").symlink_to(REPO / "src" / "haf")
    (dest / "src").symlink_to(REPO / "src")
    referenced = set()
    for smk in (dest / "workflow" / "rules").glob("*.smk"):
        referenced |= set(re.findall(r"\.\./scripts/([\w.]+\.py)", smk.read_text()))
    for name in referenced:
        if not (scripts / name).exists():
            (scripts / name).write_text("# placeholder: the real script is not in the repository yet\n")
    return dest


def _snakemake(
    workdir: Path, *args: str, timeout: int = 300, tiny: str = "tiny.yaml"
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "snakemake", "--configfile", "config/config.yaml", tiny, *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)


def _planned(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job of a dry run's output."""
    jobs = []
    for block in re.split(r"\n(?=(?:localrule|rule) \w+:)", output):
        m = re.match(r"(?:localrule|rule) (\w+):", block.strip())
        if not m:
            continue
        w = re.search(r"wildcards: (.*)", block)
        wildcards = dict(kv.split("=", 1) for kv in w.group(1).split(", ")) if w else {}
        jobs.append((m.group(1), wildcards))
    return jobs


@pytest.fixture(scope="module")
def dry_workflow(tmp_path_factory) -> Path:
    work = _copy_workflow(tmp_path_factory.mktemp("dry"))
    tiny = {
        "results": str(work / "results"),
        "logs": str(work / "logs"),
        "cv": {"scheme": "kfold", "k": 3, "seed": 1, "val_fraction": 0.15},
        "run_methods": ["wsi_clam", "fusion_mlp_all", "haf", "haf_nodetach", "late_fusion", "parachute"],
        "evaluation": {"figure_methods": ["haf"], "survival_methods": ["parachute"]},
    }
    (work / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    return work


@pytest.mark.parametrize(
    "target, fusion, comparator",
    [
        ("fig_dropout", {"haf"}, set()),
        ("fig_tsne", set(), set()),
        ("fig_km", set(), {"parachute"}),
        ("table2", {"haf", "haf_nodetach"}, set()),
    ],
)
def test_dry_run_of_one_target_schedules_only_its_methods(dry_workflow, target, fusion, comparator):
    result = _snakemake(dry_workflow, "-n", target)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = _planned(result.stdout)
    rules = [r for r, _ in jobs]
    assert target in rules, result.stdout[-2000:]
    assert {w["method"] for r, w in jobs if r in ("fusion", "fusion_joint")} == fusion
    assert {w["method"] for r, w in jobs if r == "comparator"} == comparator
    for method in fusion | comparator:  # one job per method trains every fold
        assert (
            sum(1 for r, w in jobs if r in ("fusion", "fusion_joint", "comparator") and w["method"] == method)
            == 1
        )
    evaluation = [r for r in rules if r in EVAL_RULES]
    assert evaluation == [target]  # no other table or figure
    if target == "fig_tsne":
        assert [w["align"] for r, w in jobs if r == "align"] == ["ga"]


def test_per_p_models_are_one_comparator_job_each_and_feed_table5(dry_workflow):
    # PARACHUTE's per-p protocol: a model per p_miss, each its own method and job (every fold in it)
    per_p = ["parachute", "parachute_p05", "parachute_p15", "parachute_p30"]
    tiny = yaml.safe_load((dry_workflow / "tiny.yaml").read_text())
    tiny["run_methods"] = ["haf", *per_p]
    (dry_workflow / "tiny_per_p.yaml").write_text(yaml.safe_dump(tiny))
    result = _snakemake(dry_workflow, "-n", "table5", tiny="tiny_per_p.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = _planned(result.stdout)
    comparator = [w["method"] for r, w in jobs if r == "comparator"]
    assert sorted(comparator) == sorted(per_p)  # one job per method
    assert [r for r, _ in jobs if r in EVAL_RULES] == ["table5"]


@pytest.mark.e2e
def test_evaluation_rules_end_to_end_with_report(tmp_path):
    from fakes.config import load_config
    from fakes.evaluation import write_fake_results

    from haf.methods import active_methods

    work = _copy_workflow(tmp_path)
    per_p = ["parachute_p05", "parachute_p15", "parachute_p30"]
    run_methods = ["wsi_clam", "haf", "haf_nodetach", "ga", "fusion_mlp_all", "parachute", "haf_cox", *per_p]
    evaluation = {
        "dropout_p": [0.0, 0.5],
        "parachute_p": [0.05, 0.15, 0.30],
        "repeats": 2,
        "mask_seed": 7,
        "bootstrap": 50,
        "figure_methods": ["haf", "ga", "parachute"],
        "survival_methods": ["haf", "haf_cox", "parachute"],
    }
    tiny = {
        "results": str(work / "results"),
        "logs": str(work / "logs"),
        "cv": {"scheme": "kfold", "k": 2, "repeats": 2, "seed": 1, "val_fraction": 0.15},
        "run_methods": run_methods,
        "evaluation": evaluation,
    }
    (work / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["run_methods"] = run_methods
    filled = load_config({"evaluation": evaluation})[
        "evaluation"
    ]  # the schema's defaults, as the rules see them
    write_fake_results(work / "results", active_methods(config), n=40, k=2, evaluation=filled, repeats=2)

    run = _snakemake(work, "--cores", "2", "--allowed-rules", *EVAL_RULES, "--", *EVAL_RULES, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    res = work / "results"
    for name in ("fig2_dropout", "fig3_tsne", "fig4_heatmap", "td_auc", "calibration", "km"):
        assert (res / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
        assert (res / "figures" / f"{name}.png").stat().st_size > 1000
    table1 = pd.read_csv(res / "tables" / "table1.csv")
    assert list(table1["method"]) == [
        "wsi_clam",
        "haf",
        "ga",
        "fusion_mlp_all",
        "parachute",
        "haf_cox",
        *per_p,
    ]
    assert (table1["n_cv_repeats"] == 2).all() and "2 repeats of 2-fold" in (
        res / "tables" / "table1.md"
    ).read_text()
    assert (table1["n_labelled"] > 0).all()
    assert "SYNTHETIC" in (res / "tables" / "table1.md").read_text()
    tests = pd.read_csv(res / "tables" / "table1_tests.csv")
    assert set(tests["method"]) == {"wsi_clam", "fusion_mlp_all", "ga", "parachute", "haf_cox", *per_p}
    table5 = pd.read_csv(res / "tables" / "table5_degradation.csv")
    assert set(table5["metric"]) == {"cindex", "auc"} and "slope_5_30" in table5
    # PARACHUTE's per-p protocol beside the one-model row; the per-p models have no row of their own
    assert list(dict.fromkeys(table5["method"])) == [
        "haf",
        "haf_nodetach",
        "ga",
        "fusion_mlp_all",
        "haf_cox",
        "parachute",
        "parachute:per_p",
    ]
    training = table5.drop_duplicates("method").set_index("method")["training"]
    assert training["parachute:per_p"] == "a model per p (trained at p_miss = p)"
    assert training["parachute"] == "one model at every p"
    masked5 = pd.read_csv(res / "tables" / "parachute_masked.csv")
    per_p_rows = masked5[masked5["method"] == "parachute:per_p"]
    assert dict(zip(per_p_rows["p"], per_p_rows["trained_method"], strict=False)) == dict(
        zip([0.05, 0.15, 0.3], per_p, strict=True)
    )
    assert "a model per p" in (res / "tables" / "table5_degradation.md").read_text()
    survival = pd.read_csv(res / "tables" / "survival_metrics.csv")
    assert set(survival["method"]) == set(run_methods)
    assert (survival["harrell_c_ci_low"] < survival["harrell_c_pooled"]).all()
    by_method = survival.set_index("method")
    for m in run_methods:  # Brier: Cox methods only, undefined where a validation part ends before the grid
        if m in ("parachute", "haf_cox", *per_p):
            assert (
                by_method.loc[m, "ibs_pooled"] > 0 or "undefined in folds" in by_method.loc[m, "ibs_status"]
            )
        else:
            assert np.isnan(by_method.loc[m, "ibs_pooled"]) and "binary" in by_method.loc[m, "ibs_status"]
    assert {"harrell_c", "uno_c", "td_auc_mean", "ibs"} == set(
        pd.read_csv(res / "tables" / "survival_tests.csv")["metric"]
    )
    claims = pd.read_csv(res / "tables" / "claims.csv")
    assert list(claims.columns[:7]) == ["claim", "metric", "effect", "ci_low", "ci_high", "p", "verdict"]
    assert set(claims["verdict"]) <= {"supported", "refuted", "inconclusive"}
    assert {c[:3] for c in claims["claim"]} == {"(a)", "(b)", "(c)", "(d)", "(e)", "(f)"}
    assert "drop did not run" in (res / "tables" / "claims.md").read_text()

    report = _snakemake(work, "--report", str(tmp_path / "report.html"), "--", *EVAL_RULES)
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    assert "SYNTHETIC demo cohort" in html and "Figure 2: what happens" in html
    assert "Claims of the HAF paper" in html

    # one named target rebuilds its own file and nothing else
    (res / "figures" / "km.png").unlink()
    again = _snakemake(work, "-n", "--allowed-rules", *EVAL_RULES, "--", "fig_km")
    assert [r for r, _ in _planned(again.stdout)] == ["fig_km"], again.stdout[-2000:]
