"""The rules ``align`` and ``fusion`` and their scripts, run by Snakemake on synthetic fold inputs.

A small Snakefile defines what ``common.smk`` would (results folder, methods, helpers) and includes
the real ``stage2.smk`` and ``stage3.smk``, so the rule wiring, the script adapters and the library
are exercised together (three jobs, each training both folds; about 20 s: Snakemake and torch start-up dominate).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import yaml
from fakes.config import load_config
from fakes.fusion import synthetic_fold_inputs

SMALL_DIMS = {"wsi": 6, "tma": 6, "cell": 4, "clin": 4, "path": 5, "blood": 4, "icd": 3}


@pytest.mark.e2e
def test_align_and_fusion_rules_run_under_snakemake(tmp_path, repo_root):
    results = tmp_path / "results"
    for fold in (0, 1):
        synthetic_fold_inputs(80, fold=fold, seed=5, dims=SMALL_DIMS).save(
            results / "fold_inputs" / f"fold_{fold}.npz"
        )
    config = {
        "results": str(results),
        "logs": str(tmp_path / "logs"),
        "device": "cpu",
        "stage2": {
            "d_out": 8,
            "hidden": 16,
            "max_epochs": 4,
            "batch_size": 32,
            "lr": 1e-3,
            "tau_sv": 0.1,
            "tau_pd": 0.1,
            "lambda_pd": 0.01,
            "tau_clip": 0.07,
            "weight_decay": 1e-5,
            "es_patience": 5,
            "lr_patience": 15,
            "lr_factor": 0.5,
            "seed": 2,
        },
        "stage3": {
            "hidden": 16,
            "dropout": 0.1,
            "lambda_mofe": 0.1,
            "lr": 1e-3,
            "weight_decay": 1e-5,
            "max_epochs": 4,
            "batch_size": 32,
            "lr_patience": 15,
            "lr_factor": 0.5,
            "es_patience": 5,
            "seed": 3,
        },
        "evaluation": {"dropout_p": [0.0, 0.5], "parachute_p": [0.3], "repeats": 2, "mask_seed": 7},
        "methods": {
            "haf": {"family": "fusion", "align": "ga", "drop": True},
            "haf_cox": {"family": "fusion", "align": "ga", "drop": True, "task_loss": "cox"},
        },
    }
    config = load_config(config)
    config["run_methods"] = ["haf", "haf_cox"]
    config["methods"] = {m: d for m, d in config["methods"].items() if m in config["run_methods"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    rules = repo_root / "workflow" / "rules"
    targets = [f"{results}/methods/{m}/fold_{f}/predictions.tsv" for m in config["methods"] for f in (0, 1)]
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent(
            f"""
            import re, sys
            sys.path.insert(0, {str(repo_root / "src")!r})
            from haf.methods import active_methods
            configfile: {str(tmp_path / "config.yaml")!r}
            config["run_methods"] = list(config["methods"])
            RES = config["results"]
            LOGS = config["logs"]
            METHODS = active_methods(config)
            FUSION_METHODS = list(METHODS)
            DETACHED_FUSION_METHODS = [m for m in METHODS if METHODS[m]["detach"]]
            JOINT_FUSION_METHODS = [m for m in METHODS if not METHODS[m]["detach"]]
            FOLDS = [0, 1]
            def per_fold(template):
                return [template.replace("{{fold}}", str(k)) for k in FOLDS]
            def fusion_inputs(wildcards):
                align = METHODS[wildcards.method]["align"]
                inputs = {{"fold_inputs": per_fold(f"{{RES}}/fold_inputs/fold_{{{{fold}}}}.npz")}}
                if align != "none":
                    inputs["projectors"] = per_fold(f"{{RES}}/stage2/{{align}}/fold_{{{{fold}}}}/projectors.pt")
                return inputs
            TMA_INDEX = f"{{RES}}/features/tma/index.tsv"
            PATHOLOGY_NEEDED = []
            def tma_index_input(wildcards):
                return []
            def joint_inputs(wildcards):
                return {{}}
            def name_pattern(names):
                return "|".join(re.escape(n) for n in names) if names else "(?!x)x"
            wildcard_constraints:
                fold=r"\\d+",
                align="ga|clip",
            rule all:
                input: {targets!r}
            include: {str(rules / "stage2.smk")!r}
            include: {str(rules / "stage3.smk")!r}
            """
        )
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(tmp_path / "Snakefile"),
            "--cores",
            "2",
            "--quiet",
            "--directory",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for fold in (0, 1):
        assert (results / "stage2" / "ga" / f"fold_{fold}" / "aligned.npz").is_file()
        for method in config["methods"]:
            folder = results / "methods" / method / f"fold_{fold}"
            predictions = pd.read_csv(folder / "predictions.tsv", sep="\t", dtype={"patient_id": str})
            assert set(predictions["part"]) == {"val", "test"} and (predictions["method"] == method).all()
            assert predictions["prob"].isna().all() == (method == "haf_cox")
            assert (folder / "masked.tsv.gz").is_file() and (folder / "model.pt").is_file()
    log = (tmp_path / "logs" / "methods" / "haf.log").read_text()
    assert "haf fold 0" in log and "haf fold 1" in log and "usable for the bce loss" in log
