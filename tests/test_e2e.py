"""The whole pipeline under Snakemake on a tiny demo cohort: every rule, every method, every table and figure.

One module-scoped run (a 40-patient SYNTHETIC demo, 3 folds, a few epochs per stage) from the demo
generator to the report; the tests then check what a user reads, that a named target rebuilds alone,
and that a retrained job reproduces its outputs bit for bit.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import run_snakemake

from haf.artifacts.predictions import read_predictions
from haf.methods import active_methods

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "demo": {"n_patients": 40, "seed": 5, "wsi_bag_size": [8, 24], "core_px": 128},
    "cv": {"k": 2, "val_fraction": 0.2},
    "extract": {"num_workers": 0, "batch_size": 64},
    "stage1": {"max_epochs": 3, "es_patience": 2},
    "stage2": {"max_epochs": 3, "es_patience": 2},
    "stage3": {"max_epochs": 3, "es_patience": 2},
    "parachute": {"max_epochs": 3, "es_patience": 2, "d": 32, "d_int": 32},
    "evaluation": {"repeats": 2, "bootstrap": 20, "dropout_p": [0.0, 0.5], "td_auc_points": 5},
}


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, *args, timeout=900)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("e2e")
    config = dict(
        TINY,
        data_root=str(work / "demo" / "Hancock_Dataset"),
        results=str(work / "results"),
        logs=str(work / "logs"),
    )
    run = run_snakemake(work, override=config, timeout=900)
    assert run.returncode == 0, run.stderr[-6000:]
    return work


@pytest.fixture(scope="module")
def methods() -> dict:
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "config" / "schema.yaml"))
    return active_methods(config)


def test_every_table_and_figure_is_made(pipeline):
    res = pipeline / "results"
    for table in ("table1", "table2", "table5_degradation", "survival_metrics"):
        for ext in ("csv", "md", "tex"):
            assert (res / "tables" / f"{table}.{ext}").stat().st_size > 0, f"{table}.{ext}"
    for figure in ("fig2_dropout", "fig3_tsne", "fig4_heatmap", "td_auc", "calibration", "km", "attention"):
        for ext in ("pdf", "png"):
            assert (res / "figures" / f"{figure}.{ext}").stat().st_size > 1000, f"{figure}.{ext}"
    assert "SYNTHETIC" in (res / "tables" / "table1.md").read_text()
    # the attention figure: the top- and bottom-risk test patient of fold 0, TMA tiles on real demo cores
    attention = pd.read_csv(res / "figures" / "attention.csv", dtype={"patient_id": str})
    assert set(attention["pmod"]) == {"tma", "wsi"} and set(attention["part"]) == {"test"}
    assert set(attention["selection"]) == {"highest risk", "lowest risk"}
    assert (attention.loc[attention["pmod"] == "tma", "core"] >= 0).all()
    for _, bag in attention.groupby(["pmod", "patient_id"]):
        assert abs(bag["attention"].sum() - 1) < 1e-4
    # run-level files: every method's metrics, every benchmarked job's cost (no TSV missing in a fresh run)
    metrics = json.loads((res / "metrics.json").read_text())
    assert set(metrics["methods"]) == set(
        active_methods(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    )
    benchmarks = pd.read_csv(res / "tables" / "benchmarks.csv")
    assert (benchmarks["status"].iloc[:-1] == "ok").all() and (benchmarks["s"].iloc[:-1] > 0).all()
    assert "Every job's benchmark file was found." in (res / "tables" / "benchmarks.md").read_text()
    for pmod in ("wsi", "tma", "wsi_tma"):
        for fold in range(2):
            assert (res / "stage1" / pmod / f"fold_{fold}" / "attention.h5").stat().st_size > 0


def test_every_method_wrote_predictions_for_every_fold(pipeline, methods):
    res = pipeline / "results"
    for name, decl in methods.items():
        for fold in range(2):
            if decl["family"] == "clam":
                path = res / "stage1" / decl["pathology_model"] / f"fold_{fold}" / "predictions.tsv"
            else:
                path = res / "methods" / name / f"fold_{fold}" / "predictions.tsv"
            frame = read_predictions(path)
            assert set(frame["part"]) == {"val", "test"}, path
            assert (frame["method"] == name).all()
    table1 = set(pd.read_csv(res / "tables" / "table1.csv")["method"])
    table2_csv = pd.read_csv(res / "tables" / "table2.csv", keep_default_na=False)
    table2 = set(table2_csv["method_nodetach"]) | set(table2_csv["method_nodetach_warm"])
    for name, decl in methods.items():
        assert name in (table1 if decl.get("detach", True) else table2), f"{name} missing from its table"


def test_named_target_rebuilds_only_its_file(pipeline):
    target = pipeline / "results" / "figures" / "fig2_dropout.pdf"
    figure_files = [target.with_suffix(ext) for ext in (".pdf", ".png", ".csv")]
    before = [p.read_bytes() for p in figure_files]
    target.unlink()
    dry = _snakemake(pipeline, "--dry-run", "--", "fig_dropout")
    assert dry.returncode == 0, dry.stderr[-3000:]
    planned = set(re.findall(r"^(?:localrule|rule) (\w+):", dry.stdout, flags=re.M))
    assert planned == {"fig_dropout"}, dry.stdout[-3000:]
    run = _snakemake(pipeline, "--", "fig_dropout")
    assert run.returncode == 0, run.stderr[-3000:]
    assert target.stat().st_size > 1000
    # a rebuilt figure is the same file, byte for byte (PDF without a creation date)
    assert [p.read_bytes() for p in figure_files] == before


def test_retraining_a_job_reproduces_its_outputs(pipeline):
    res = pipeline / "results"
    outputs = [
        res / "methods" / "haf" / f"fold_{k}" / name
        for k in (0, 1)
        for name in ("model.pt", "predictions.tsv", "masked.tsv.gz", "train_log.tsv")
    ] + [
        res / "stage1" / "wsi" / f"fold_{k}" / name
        for k in (0, 1)
        for name in (
            "model.pt",
            "embeddings.npz",
            "predictions.tsv",
            "train_log.tsv",
            "loss_curve.png",
            "attention.h5",
        )  # fmt: skip
    ]
    before = [p.read_bytes() for p in outputs]
    run = _snakemake(pipeline, "--forcerun", "fusion", "fusion_joint", "stage1", "--", *map(str, outputs))
    assert run.returncode == 0, run.stderr[-3000:]
    assert [p.read_bytes() for p in outputs] == before


def test_report_holds_tables_and_figures(pipeline):
    run = _snakemake(pipeline, "--report", str(pipeline / "report.html"))
    assert run.returncode == 0, run.stderr[-3000:]
    html = (pipeline / "report.html").read_text(errors="replace")
    assert "table1" in html and "fig2_dropout" in html
    for name in ("loss_curve", "attention", "metrics.json", "benchmarks", "km.csv", "calibration_summary"):
        assert name in html, name
