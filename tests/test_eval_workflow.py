"""Evaluation rules in the workflow: asking for one figure plans only what it needs (dry run), and the
ten named targets run end to end on fake inputs in the contract formats, with the HTML report.

The workflow is copied to a temporary folder so that the tests leave no `.snakemake` state in the
repository. Rule scripts that do not exist yet (other stages under construction) get an empty
placeholder in the copy: a dry run only needs the file to exist. The end-to-end test runs only the
evaluation rules (`--allowed-rules`) on inputs written by `tests/fakes/evaluation.py`.
"""

from __future__ import annotations

import json
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
    "fig_attention",
    "metrics",
    "benchmarks",
    "selected_epochs",
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


def _benchmarked_outputs(run_methods: list[str], encoder: str, fold: int = 0) -> list[str]:
    """One output per benchmarked job of these methods (what rule benchmarks waits for), as files under
    the workdir; the pathology models are wsi and tma (every method list used here needs both)."""
    clam = {"wsi_clam": "wsi", "tma_clam": "tma", "wsi_tma_clam": "wsi_tma"}
    pmods = ["wsi", "tma"] + [clam[m] for m in run_methods if m in clam and clam[m] not in ("wsi", "tma")]
    return (
        [f"results/features/tma/{encoder}/index.tsv"]
        + [f"results/stage1/{p}/fold_{fold}/train_log.tsv" for p in pmods]
        + [f"results/stage2/ga/fold_{fold}/train_log.tsv"]
        + [f"results/methods/{m}/fold_{fold}/train_log.tsv" for m in run_methods if m not in clam]
    )


def test_attention_metrics_and_benchmarks_rules_on_fake_inputs(tmp_path):
    """fig_attention, metrics and benchmarks as Snakemake runs them, on fake inputs in the contract formats."""
    from fakes.evaluation import (
        fake_cohort,
        write_fake_attention,
        write_fake_job_outputs,
        write_fake_metric_tables,
    )

    from haf.artifacts.attention import attention_index

    work = _copy_workflow(tmp_path)
    run_methods = ["wsi_clam", "tma_clam", "haf", "parachute"]
    tiny = {
        "results": str(work / "results"),
        "logs": str(work / "logs"),
        "cv": {"scheme": "kfold", "k": 3, "seed": 1, "val_fraction": 0.15},
        "run_methods": run_methods,
        "evaluation": {"attention_top_k": 2},
    }
    (work / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    _, folds, _, _ = fake_cohort(24, 3, seed=2)
    files = write_fake_attention(work / "results", folds, 0)
    write_fake_metric_tables(work / "results", run_methods, in_table1=run_methods)
    encoder = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["extract"]["encoder"]
    write_fake_job_outputs(work, _benchmarked_outputs(run_methods, encoder))
    (work / "logs" / "benchmarks").mkdir(parents=True)
    for name in ("stage1_wsi", "haf"):
        (work / "logs" / "benchmarks" / f"{name}.tsv").write_text(
            "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
            "12.0\t0:00:12\t300\t900\t280\t290\t1\t2\t95\t11.5\n"
        )
    rules = ["fig_attention", "metrics", "benchmarks"]
    run = _snakemake(work, "--cores", "1", "--allowed-rules", *rules, "--", *rules)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    res = work / "results"
    assert (res / "figures" / "attention.pdf").read_bytes()[:4] == b"%PDF"
    drawn = pd.read_csv(res / "figures" / "attention.csv", dtype={"patient_id": str})
    for pmod in ("tma", "wsi"):  # the default: fold 0's highest- and lowest-risk test patient per model
        index = attention_index(files[pmod])
        test = index[index["part"] == "test"].set_index("patient_id")["risk"]
        got = drawn[drawn["pmod"] == pmod].drop_duplicates("patient_id").set_index("selection")["patient_id"]
        assert got.to_dict() == {"highest risk": test.idxmax(), "lowest risk": test.idxmin()}
    metrics = json.loads((res / "metrics.json").read_text())
    assert set(metrics["methods"]) == set(run_methods) and metrics["cv"]["n_folds"] == 3
    table = pd.read_csv(res / "tables" / "benchmarks.csv")
    assert table["job"].tolist() == [
        "extract_tma", "stage1 wsi", "stage1 tma", "align ga", "haf", "parachute", "total",
    ]  # fmt: skip
    assert table["status"].tolist() == ["missing", "ok", "missing", "missing", "ok", "missing", "2 of 6 jobs"]
    assert table["s"].iloc[-1] == 24.0
    md = (res / "tables" / "benchmarks.md").read_text()
    assert "Missing benchmark files (4): extract_tma" in md and "logs/benchmarks/align_ga.tsv" in md


def test_selected_epochs_and_table1_flags_on_fake_inputs(tmp_path):
    """selected_epochs and table1 as Snakemake runs them: the kept epochs are the logs' own, and the
    small-validation flags are exactly the folds whose validation part (counted independently here,
    from folds.tsv and targets.tsv) has fewer usable patients than training.min_val_patients."""
    from fakes.config import load_config
    from fakes.evaluation import write_fake_job_outputs, write_fake_results, write_fake_train_logs

    from haf.artifacts.aligned import read_aligned
    from haf.eval.geometry import geometry_summary
    from haf.methods import active_methods

    work = _copy_workflow(tmp_path)
    run_methods = ["wsi_clam", "tma_clam", "haf", "haf_nodetach", "parachute", "coxph"]
    tiny = {
        "results": str(work / "results"),
        "logs": str(work / "logs"),
        "cv": {"scheme": "kfold", "k": 2, "repeats": 2, "seed": 1, "val_fraction": 0.15},
        "run_methods": run_methods,
        "training": {"min_val_patients": 4},
        "evaluation": {"bootstrap": 20, "early_epoch": 3},
    }
    (work / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    config = load_config({"run_methods": run_methods})
    fake = write_fake_results(
        work / "results", active_methods(config), n=40, k=2, repeats=2, with_masked=False
    )
    kept = write_fake_train_logs(work / "results", seed=3)
    rules = ["selected_epochs", "table1", "fig_tsne"]
    run = _snakemake(work, "--cores", "1", "--allowed-rules", *rules, "--", *rules)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    res = work / "results"
    # Fig. 3's numbers: the geometry function on the figure's fold (its caption line: tests/test_eval_geometry.py)
    shown = pd.read_csv(res / "figures" / "fig3_tsne_geometry.csv").iloc[0]
    expected = geometry_summary(read_aligned(res / "stage2" / "ga" / "fold_0" / "aligned.npz"), "test")
    assert shown["fold"] == 0 and all(shown[k] == pytest.approx(v, rel=1e-5) for k, v in expected.items())
    assert "cross-patient same-modality cosine" in (work / "logs" / "evaluate" / "fig_tsne.log").read_text()
    per_fold = pd.read_csv(res / "tables" / "selected_epochs_folds.csv")
    summary = pd.read_csv(res / "tables" / "selected_epochs.csv").set_index("model")
    models = ["stage1/wsi", "stage1/tma", "stage2/ga", "haf", "haf_nodetach", "parachute"]
    assert list(summary.index) == models  # coxph (sksurv) has no epochs
    assert "coxph" in (res / "tables" / "selected_epochs.md").read_text()
    for _, row in per_fold.iterrows():
        base = res / row["model"] if "/" in row["model"] else res / "methods" / row["model"]
        assert kept[base / f"fold_{row['fold']}" / "train_log.tsv"] == row["kept_epoch"], row["model"]
    # usable validation patients from the split itself: labelled (binary), all (Cox), >= 2 modalities (Stage 2)
    folds, targets, present = fake["folds"], fake["targets"].set_index("patient_id"), fake["present"]
    ids = list(fake["targets"]["patient_id"])
    for _, row in per_fold.iterrows():
        val = folds[(folds["fold"] == row["fold"]) & (folds["part"] == "val")]["patient_id"]
        if row["model"] == "stage2/ga":
            usable = int((present[[ids.index(p) for p in val]].sum(axis=1) >= 2).sum())
        elif row["model"] == "parachute":
            usable = len(val)
        else:
            usable = int(targets.loc[val, "label"].notna().sum())
        assert row["n_val_usable"] == usable, (row["model"], row["fold"])
        assert row["small_val"] == (usable < 4) and row["early"] == (row["kept_epoch"] <= 3)
    assert (summary["small_val_folds"] == per_fold.groupby("model")["small_val"].sum()[models]).all()
    assert 0 < per_fold["small_val"].sum() < len(per_fold), per_fold[["model", "fold", "n_val_usable"]]
    assert summary.loc["parachute", "small_val_folds"] == 0 and summary["n_folds"].eq(4).all()
    table1 = pd.read_csv(res / "tables" / "table1.csv").set_index("method")
    stage1 = summary.loc["stage1/wsi", "small_val_folds"]
    assert table1.loc["wsi_clam", "small_val_folds"] == stage1  # the same folds flagged in both tables
    assert table1.loc["haf", "small_val_folds"] == summary.loc["haf", "small_val_folds"]
    md = (res / "tables" / "table1.md").read_text()
    assert "Small val. folds" in md and "fewer than 4 usable patients" in md
    # the report shows Stage 1's loss curves (the stage1 jobs are in these rules' DAG)
    write_fake_job_outputs(
        work, [f"results/stage1/{p}/fold_{k}/loss_curve.png" for p in ("wsi", "tma") for k in range(4)]
    )
    report = _snakemake(work, "--report", str(tmp_path / "report.html"), "--", *rules)
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    for caption in ("Which epoch each model kept", "Figure 3, its numbers", "cross-patient same-modality"):
        assert caption in html, caption


@pytest.fixture(scope="module")
def dry_workflow(tmp_path_factory) -> Path:
    work = _copy_workflow(tmp_path_factory.mktemp("dry"))
    tiny = {
        "results": str(work / "results"),
        "logs": str(work / "logs"),
        "cv": {"scheme": "kfold", "k": 3, "seed": 1, "val_fraction": 0.15},
        "run_methods": [
            "wsi_clam",
            "fusion_mlp_all",
            "haf",
            "haf_nodetach",
            "haf_nodetach_warm",
            "late_fusion",
            "parachute",
            "coxph",
        ],  # fmt: skip
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
        ("table2", {"haf", "haf_nodetach", "haf_nodetach_warm"}, set()),
        (
            "table5",
            {"fusion_mlp_all", "haf", "haf_nodetach", "haf_nodetach_warm"},
            {"late_fusion", "parachute"},
        ),
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
    # the classical baselines have masked predictions: the PARACHUTE table fits them (rule sksurv)
    assert {w["method"] for r, w in jobs if r == "sksurv"} == ({"coxph"} if target == "table5" else set())


def test_dry_run_warm_ablation_reads_each_folds_stage1_models(dry_workflow):
    result = _snakemake(dry_workflow, "-n", "table2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    inputs = {}
    for block in re.split(r"\n(?=(?:localrule|rule) \w+:)", result.stdout):
        method = re.search(r"wildcards: method=(\w+)", block)
        if block.strip().startswith("rule fusion_joint:") and method:
            inputs[method.group(1)] = re.search(r"input: (.*)", block).group(1).split(", ")
    models = [f"/stage1/{pm}/fold_{k}/model.pt" for pm in ("wsi", "tma") for k in range(3)]
    warm, scratch = inputs["haf_nodetach_warm"], inputs["haf_nodetach"]
    assert all(any(path.endswith(m) for path in warm) for m in models), warm
    assert not any(path.endswith("model.pt") for path in scratch), scratch
    assert {p for p in warm if not p.endswith("model.pt")} == set(scratch)  # otherwise the same inputs
    assert "stage1" in [r for r, _ in _planned(result.stdout)]  # which the DAG makes first


def test_dry_run_token_comparators_read_the_bags_and_slide_level_ones_do_not(dry_workflow):
    # tokens: instance takes its instance tokens from the bags: the manifest and the TMA index are inputs
    tiny = yaml.safe_load((dry_workflow / "tiny.yaml").read_text())
    methods = ["attention_fusion", "attention_fusion_tokens", "mfmf_tokens"]
    tiny["run_methods"] = ["haf", *methods]
    tiny["evaluation"] = {"figure_methods": methods, "survival_methods": []}
    (dry_workflow / "tiny_tokens.yaml").write_text(yaml.safe_dump(tiny))
    result = _snakemake(dry_workflow, "-n", "fig_dropout", tiny="tiny_tokens.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    inputs = {}
    for block in re.split(r"\n(?=(?:localrule|rule) \w+:)", result.stdout):
        method = re.search(r"wildcards: method=(\w+)", block)
        if block.strip().startswith("rule comparator:") and method:
            inputs[method.group(1)] = re.search(r"input: (.*)", block).group(1).split(", ")
    assert sorted(inputs) == sorted(methods)  # one comparator job each
    for method in ("attention_fusion_tokens", "mfmf_tokens"):
        assert any(p.endswith("cohort/manifest.tsv") for p in inputs[method]), inputs[method]
        assert any(p.endswith("/index.tsv") and "/features/tma/" in p for p in inputs[method]), inputs[method]
    assert all(p.endswith(".npz") and "/fold_inputs/" in p for p in inputs["attention_fusion"])


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
    from fakes.evaluation import (
        write_fake_attention,
        write_fake_job_outputs,
        write_fake_results,
        write_fake_train_logs,
    )

    from haf.artifacts.predictions import read_predictions, write_predictions
    from haf.methods import active_methods

    work = _copy_workflow(tmp_path)
    per_p = ["parachute_p05", "parachute_p15", "parachute_p30"]
    run_methods = [
        "wsi_clam", "haf", "haf_nodetach", "haf_nodetach_warm", "ga", "fusion_mlp_all", "parachute", "haf_cox",
        "coxnet", *per_p,
    ]  # fmt: skip
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
    fake = write_fake_results(
        work / "results", active_methods(config), n=40, k=2, evaluation=filled, repeats=2
    )
    write_fake_attention(work / "results", fake["folds"], 0)
    # haf's Stage 1 TMA model has no CLAM method here: its predictions as WSI-CLAM's (selected_epochs counts them)
    for k in range(4):
        wsi = read_predictions(work / "results" / "stage1" / "wsi" / f"fold_{k}" / "predictions.tsv")
        write_predictions(
            work / "results" / "stage1" / "tma" / f"fold_{k}" / "predictions.tsv",
            wsi.assign(method="tma_clam"),
        )
    write_fake_train_logs(work / "results")  # rule selected_epochs reads every fold's log
    write_fake_job_outputs(work, _benchmarked_outputs(run_methods, config["extract"]["encoder"]))
    # the report shows Stage 1's loss curves (the stage1 jobs are in the DAG of table1 and benchmarks)
    write_fake_job_outputs(
        work, [f"results/stage1/{p}/fold_{k}/loss_curve.png" for p in ("wsi", "tma") for k in range(4)]
    )

    run = _snakemake(work, "--cores", "2", "--allowed-rules", *EVAL_RULES, "--", *EVAL_RULES, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    res = work / "results"
    for name in ("fig2_dropout", "fig3_tsne", "fig4_heatmap", "td_auc", "calibration", "km", "attention"):
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
        "coxnet",
        *per_p,
    ]
    assert (table1["n_cv_repeats"] == 2).all() and "2 repeats of 2-fold" in (
        res / "tables" / "table1.md"
    ).read_text()
    assert (table1["n_labelled"] > 0).all()
    assert "SYNTHETIC" in (res / "tables" / "table1.md").read_text()
    tests = pd.read_csv(res / "tables" / "table1_tests.csv")
    assert set(tests["method"]) == {
        "wsi_clam",
        "fusion_mlp_all",
        "ga",
        "parachute",
        "haf_cox",
        "coxnet",
        *per_p,
    }
    table2 = pd.read_csv(res / "tables" / "table2.csv", keep_default_na=False).set_index("setting")
    assert table2.loc["HAF", "method_nodetach"] == "haf_nodetach"
    assert table2.loc["HAF", "method_nodetach_warm"] == "haf_nodetach_warm"
    assert (
        "| Setting | Metric | w (with detach) | w/o, from scratch | w/o, warm (Stage 1) |"
        in (res / "tables" / "table2.md").read_text()
    )
    table5 = pd.read_csv(res / "tables" / "table5_degradation.csv")
    assert set(table5["metric"]) == {"cindex", "auc"} and "slope_5_30" in table5
    # PARACHUTE's per-p protocol beside the one-model row; the per-p models have no row of their own
    assert list(dict.fromkeys(table5["method"])) == [
        "haf",
        "haf_nodetach",
        "haf_nodetach_warm",
        "ga",
        "fusion_mlp_all",
        "haf_cox",
        "parachute",
        "parachute:per_p",
        "coxnet",
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
        if m in ("parachute", "haf_cox", "coxnet", *per_p):
            assert (
                by_method.loc[m, "ibs_pooled"] > 0 or "undefined in folds" in by_method.loc[m, "ibs_status"]
            )
        else:
            assert np.isnan(by_method.loc[m, "ibs_pooled"]) and "binary" in by_method.loc[m, "ibs_status"]
    assert {"harrell_c", "uno_c", "td_auc_mean", "ibs"} == set(
        pd.read_csv(res / "tables" / "survival_tests.csv")["metric"]
    )
    # metrics.json holds the tables' own numbers
    metrics = json.loads((res / "metrics.json").read_text())["methods"]
    assert set(metrics) == set(run_methods) and metrics["haf_nodetach"]["binary"] is None
    for _, row in table1.iterrows():
        assert metrics[row["method"]]["binary"]["auc_pooled"] == row["auc_pooled"]
        assert metrics[row["method"]]["binary"]["n_labelled"] == row["n_labelled"]
    for _, row in survival.iterrows():
        assert metrics[row["method"]]["survival"]["harrell_c_pooled"] == row["harrell_c_pooled"]
        ibs = metrics[row["method"]]["survival"]["ibs_pooled"]
        assert ibs == row["ibs_pooled"] or (ibs is None and np.isnan(row["ibs_pooled"]))
    # fake results come without benchmark TSVs: every training job of the run is named as missing
    bench = pd.read_csv(res / "tables" / "benchmarks.csv")
    jobs = bench[bench["job"] != "total"]
    assert len(jobs) >= len(run_methods) - 1 and set(jobs["status"]) == {"missing"}  # wsi_clam = stage1 wsi
    assert f"Missing benchmark files ({len(jobs)})" in (res / "tables" / "benchmarks.md").read_text()
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
    for caption in ("Stage 1 training curves", "Where did the image models look?", "metrics.json: every method", "What each training",
                    "Kaplan-Meier figure, its numbers", "Brier score per method", "Survival metrics per fold"):  # fmt: skip
        assert caption in html, caption

    # one named target rebuilds its own file and nothing else
    (res / "figures" / "km.png").unlink()
    again = _snakemake(work, "-n", "--allowed-rules", *EVAL_RULES, "--", "fig_km")
    assert [r for r, _ in _planned(again.stdout)] == ["fig_km"], again.stdout[-2000:]
