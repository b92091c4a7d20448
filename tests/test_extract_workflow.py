"""Rule ``extract_tma`` under Snakemake: the demo's core PNGs -> per-patient h5 bags and the index, with
the rule script, then a forced rerun that resumes every patient. About 15 s (Snakemake start-up twice).
And the same rule with ``extract.precomputed.dir`` (TRIDENT-style h5 instead of extraction), about 7 s.
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from haf.artifacts.bags import read_bag


@pytest.mark.e2e
def test_extract_rule_from_demo_cores_to_bags_and_resume(tmp_path, snakemake_cli):
    config = {
        "data_root": str(tmp_path / "data"),
        "results": str(tmp_path / "results"),
        "logs": str(tmp_path / "logs"),
        "device": "cpu",
        "demo": {"enabled": True, "n_patients": 20, "seed": 3},
    }
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(config))
    index_path = tmp_path / "results" / "features" / "tma" / "demo-texture" / "index.tsv"
    run = snakemake_cli(tmp_path, "--", str(index_path))
    assert run.returncode == 0, run.stderr[-4000:]

    manifest = pd.read_csv(
        tmp_path / "results" / "cohort" / "manifest.tsv", sep="\t", dtype=str, keep_default_na=False
    )
    tma_patients = sorted(manifest.loc[manifest["tma_files"] != "", "patient_id"])
    index = pd.read_csv(index_path, sep="\t", dtype={"patient_id": str}, keep_default_na=False)
    assert sorted(index["patient_id"]) == tma_patients and len(tma_patients) >= 10
    assert index["status"].eq("ok").all()
    n_cores = manifest.set_index("patient_id").loc[index["patient_id"], "tma_files"].str.count(";") + 1
    assert index["n_cores"].tolist() == n_cores.tolist()
    for rec in index.itertuples():
        features, coords = read_bag(rec.h5_path, expected_dim=1024)
        assert features.shape == (rec.n_tiles, 1024) and rec.n_tiles >= 5 * rec.n_cores
    log = (tmp_path / "logs" / "extract_tma.log").read_text()
    assert f"{len(index)} TMA patient(s): 0 already done" in log and "extract_tma counts" in log

    rerun = snakemake_cli(tmp_path, "--forcerun", "extract_tma", "--", str(index_path))
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    log = (tmp_path / "logs" / "extract_tma.log").read_text()
    assert f"{len(index)} TMA patient(s): {len(index)} already done" in log
    again = pd.read_csv(index_path, sep="\t", dtype={"patient_id": str}, keep_default_na=False)
    pd.testing.assert_frame_equal(again, index)


@pytest.mark.e2e
def test_extract_rule_imports_precomputed_features(tmp_path, snakemake_cli):
    """extract.precomputed.dir: TRIDENT-style per-patient h5 instead of extraction; one patient missing."""
    import h5py
    import numpy as np

    feats = tmp_path / "trident_features"
    feats.mkdir()
    rng = np.random.default_rng(1)
    for i in range(1, 20):  # 001..019; 020 has no file
        with h5py.File(feats / f"{i:03d}.h5", "w") as handle:
            handle.create_dataset("features", data=rng.normal(size=(3, 1024)).astype(np.float32))
            handle.create_dataset("coords", data=np.zeros((3, 2), np.int64)).attrs["patch_size"] = 224
    config = {
        "data_root": str(tmp_path / "data"),
        "results": str(tmp_path / "results"),
        "logs": str(tmp_path / "logs"),
        "device": "cpu",
        "demo": {"enabled": True, "n_patients": 20, "seed": 3},
        "extract": {"precomputed": {"dir": str(feats)}},
    }
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(config))
    index_path = tmp_path / "results" / "features" / "tma" / "demo-texture" / "index.tsv"
    run = snakemake_cli(tmp_path, "--", str(index_path))
    assert run.returncode == 0, run.stderr[-4000:]
    manifest = pd.read_csv(
        tmp_path / "results" / "cohort" / "manifest.tsv", sep="\t", dtype=str, keep_default_na=False
    )
    with_cores = set(manifest.loc[manifest["tma_files"] != "", "patient_id"])
    assert "020" in with_cores  # the demo's patient 020 has cores, so its lack of a file is "missing"
    index = pd.read_csv(index_path, sep="\t", dtype={"patient_id": str}, keep_default_na=False)
    expected = {pid: ("missing" if pid == "020" else "ok") for pid in with_cores}
    expected.update({f"{i:03d}": "ok" for i in range(1, 20)})
    assert dict(zip(index["patient_id"], index["status"], strict=True)) == expected
    for rec in index[index["status"] == "ok"].itertuples():
        features, _ = read_bag(rec.h5_path, expected_dim=1024)
        assert features.shape == (3, 1024)
    log = (tmp_path / "logs" / "extract_tma.log").read_text()
    assert "from precomputed features" in log and "'patients_missing_precomputed': 1" in log
