"""The run-level outputs: ``metrics.json`` (haf.eval.run_metrics) against the tables it reads, and the
benchmarks table (haf.eval.benchmarks) on hand-made Snakemake benchmark TSVs."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from fakes.evaluation import write_fake_metric_tables

from haf.artifacts.files import write_json
from haf.errors import HafInputError
from haf.eval.benchmarks import benchmark_markdown, benchmark_table, read_benchmark
from haf.eval.run_metrics import BINARY_FIELDS, SURVIVAL_FIELDS, build_metrics

METHODS = {
    "wsi_clam": {"label": "WSI-CLAM", "task_loss": "bce"},
    "haf": {"label": "HAF", "task_loss": "bce"},
    "haf_nodetach": {"label": "HAF (no detach)", "task_loss": "bce"},
    "parachute": {"label": "PARACHUTE", "task_loss": "cox"},
}
CV = {"scheme": "kfold", "k": 3, "repeats": 2, "seed": 1, "val_fraction": 0.15}


def test_metrics_json_holds_the_tables_values(tmp_path):
    table1, survival = write_fake_metric_tables(
        tmp_path, list(METHODS), in_table1=["wsi_clam", "haf", "parachute"]
    )
    payload = build_metrics(table1, survival, methods=METHODS, cv=CV, n_folds=6, synthetic=True)
    write_json(tmp_path / "metrics.json", payload)
    back = json.loads((tmp_path / "metrics.json").read_text())  # valid JSON: no NaN literals
    assert back["format"] == "haf-metrics" and back["version"] == 1 and back["synthetic"] is True
    assert back["cv"] == {"scheme": "kfold", "k": 3, "repeats": 2, "seed": 1, "n_folds": 6}
    assert back["fields"] == {"binary": list(BINARY_FIELDS), "survival": list(SURVIVAL_FIELDS)}
    assert set(back["methods"]) == set(METHODS)
    b = pd.read_csv(table1).set_index("method")
    s = pd.read_csv(survival).set_index("method")
    for name, decl in METHODS.items():
        entry = back["methods"][name]
        assert entry["label"] == decl["label"] and entry["task_loss"] == decl["task_loss"]
        if name == "haf_nodetach":  # not in Table 1 (Table 2's ablation)
            assert entry["binary"] is None and entry["group"] is None
        else:
            assert entry["group"] == b.loc[name, "group"]
            assert set(entry["binary"]) == set(BINARY_FIELDS)  # JSON keys sorted; "fields" gives the order
            for f in BINARY_FIELDS:
                assert entry["binary"][f] == b.loc[name, f], (name, f)
        assert set(entry["survival"]) == set(SURVIVAL_FIELDS)
        for f in SURVIVAL_FIELDS:
            want = s.loc[name, f]
            got = entry["survival"][f]
            if isinstance(want, float) and math.isnan(want):
                assert got is None, (name, f)
            else:
                assert got == want, (name, f)
    assert isinstance(back["methods"]["haf"]["binary"]["n_labelled"], int)
    assert back["methods"]["parachute"]["survival"]["ibs_pooled"] is not None

    broken = pd.read_csv(table1).drop(columns=["auc_ci_low"])
    broken.to_csv(tmp_path / "broken.csv", index=False)
    with pytest.raises(HafInputError, match=r"broken.csv.*field 'auc_ci_low'"):
        build_metrics(tmp_path / "broken.csv", survival, methods=METHODS, cv=CV, n_folds=6, synthetic=False)
    with pytest.raises(HafInputError, match="method mfmf of run_methods is in neither table"):
        build_metrics(
            table1,
            survival,
            methods={**METHODS, "mfmf": {"label": "MFMF"}},
            cv=CV,
            n_folds=6,
            synthetic=False,
        )


HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def test_benchmarks_table_from_snakemake_tsvs(tmp_path):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "extract_tma.tsv").write_text(
        HEADER + "100.5\t0:01:40\t2048.0\t4096.0\t2000.0\tNA\t50.0\t20.0\t180.0\t190.0\n"
    )
    # a job benchmarked with repeat(..., 2): the mean of its two rows
    (bench / "stage1_wsi.tsv").write_text(
        HEADER
        + "10\t0:00:10\t500\t900\t480\t490\t1\t2\t90\t9\n"
        + "20\t0:00:20\t700\t1100\t680\t690\t3\t4\t70\t19\n"
    )
    jobs = [
        {"job": "extract_tma", "rule": "extract_tma", "benchmark": str(bench / "extract_tma.tsv")},
        {"job": "stage1 wsi", "rule": "stage1", "benchmark": str(bench / "stage1_wsi.tsv")},
        {"job": "align ga", "rule": "align", "benchmark": str(bench / "align_ga.tsv")},
    ]
    table, missing = benchmark_table(jobs)
    assert missing == [jobs[2]]
    assert table["job"].tolist() == ["extract_tma", "stage1 wsi", "align ga", "total"]
    assert table["status"].tolist() == ["ok", "ok", "missing", "2 of 3 jobs"]
    assert table["n_runs"].tolist() == [1, 2, 0, 3]
    rows = table.set_index("job")
    assert rows.loc["stage1 wsi", "s"] == 15 and rows.loc["stage1 wsi", "max_rss"] == 600
    assert rows.loc["stage1 wsi", "mean_load"] == 80 and rows.loc["stage1 wsi", "cpu_time"] == 14
    assert np.isnan(rows.loc["extract_tma", "max_pss"]) and np.isnan(rows.loc["align ga", "s"])
    # total: times and I/O summed over jobs, peak memory the largest, load not summed
    assert rows.loc["total", "s"] == 115.5 and rows.loc["total", "cpu_time"] == 204
    assert rows.loc["total", "io_out"] == 23 and rows.loc["total", "max_rss"] == 2048
    assert rows.loc["total", "max_pss"] == 590 and np.isnan(rows.loc["total", "mean_load"])
    md = benchmark_markdown(table, missing, title="Cost")
    assert "| extract_tma | extract_tma | ok | 0:01:40 | 190.0 | 2048.0 |" in md
    assert "| total |  | 2 of 3 jobs | 0:01:56 |" in md
    assert f"Missing benchmark files (1): align ga (`{bench / 'align_ga.tsv'}`)" in md
    none_missing = benchmark_markdown(*benchmark_table(jobs[:2]), title="Cost")
    assert "Every job's benchmark file was found." in none_missing and "Missing" not in none_missing

    (bench / "bad.tsv").write_text("wall\n3\n")
    with pytest.raises(HafInputError, match=r"bad.tsv.*not a Snakemake benchmark file"):
        read_benchmark(bench / "bad.tsv")
