"""Stage 1 training end to end on tiny synthetic cohorts: learning, output contracts, the rule script."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from fakes.config import load_config
from fakes.mil import BagSpec, write_synthetic_cohort

from haf.artifacts.attention import read_attention
from haf.artifacts.predictions import read_predictions
from haf.errors import HafInputError
from haf.eval.scores import auc_or_nan
from haf.mil.clam import GatedAttentionMIL
from haf.mil.train import run_stage1
from haf.runtime.seeds import fold_seed

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
DIM = 16
# small and fast: lr 1e-3 instead of 1e-4 so a few dozen epochs of a 100-patient cohort learn
SECTION = load_config(
    {
        "stage1": dict(
            wsi_dim=DIM, lr=1e-3, max_epochs=40, es_patience=12, batch_bags=8, max_instances=20, k_sample=4
        )
    }
)["stage1"]
OUTPUTS = {
    "model": "pt", "embeddings": "npz", "predictions": "tsv", "train_log": "tsv", "loss_curve": "png",
    "attention": "h5",
}  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """WSI carries a signal in 10-20 % of a positive patient's instances; TMA is pure noise."""
    root = tmp_path_factory.mktemp("stage1_cohort")
    return write_synthetic_cohort(
        root,
        n_patients=100,
        wsi=BagSpec(3, 30, DIM, signal=3.0),
        tma=BagSpec(2, 8, DIM, signal=0.0, coverage=0.9),
        k=4,
        seed=3,
        second_slide_rate=0.1,
    )


def _run(cohort, pmod, fold=0, outputs=None, **over):
    return run_stage1(
        pmod=pmod,
        fold=fold,
        manifest=cohort.manifest,
        targets=cohort.targets,
        folds=cohort.folds,
        tma_index=cohort.tma_index,
        section={**SECTION, **over},
        device=torch.device("cpu"),
        outputs=outputs,
    )


def _auc(pred: pd.DataFrame, parts=("val", "test")) -> float:
    sel = pred["part"].isin(parts)
    return auc_or_nan(pred.loc[sel, "label"].to_numpy(), pred.loc[sel, "risk"].to_numpy())


def test_planted_signal_is_learnt_and_noise_is_not(cohort):
    wsi = _run(cohort, "wsi")
    assert _auc(wsi.predictions, ("test",)) > 0.8
    assert _auc(wsi.predictions, ("val",)) > 0.75
    noise = _run(cohort, "tma")
    assert abs(_auc(noise.predictions) - 0.5) < 0.25
    assert noise.history["val_score"].notna().all()


def test_rule_script_writes_the_contract_outputs(cohort, tmp_path):
    # one patient's slide becomes empty: it must be treated as missing WSI and counted
    empty_pid = "005"
    manifest = pd.read_csv(cohort.manifest, sep="\t", dtype=str, keep_default_na=False)
    slide = Path(manifest.loc[manifest["patient_id"] == empty_pid, "wsi_files"].iloc[0].split(";")[0])
    backup = slide.read_bytes()
    with h5py.File(slide, "w") as handle:
        handle.create_dataset("features", data=np.zeros((0, DIM), np.float32))
    try:
        outputs = {
            k: [str(tmp_path / "stage1" / "wsi" / "fold_1" / f"{k}.{ext}")] for k, ext in OUTPUTS.items()
        }
        snakemake = SimpleNamespace(
            input=SimpleNamespace(
                manifest=str(cohort.manifest),
                targets=str(cohort.targets),
                folds=str(cohort.folds),
                tma_index=[str(cohort.tma_index)],
            ),
            output=SimpleNamespace(**outputs),
            params=SimpleNamespace(
                stage1={**SECTION, "max_epochs": 4},
                encoder="synthetic",
                device="cpu",
                folds=[1],
                training=load_config()["training"],
            ),
            wildcards=SimpleNamespace(pmod="wsi", fold="1"),
            log=[str(tmp_path / "stage1.log")],
            threads=1,
        )
        runpy.run_path(
            str(REPO / "workflow" / "scripts" / "train_stage1.py"), init_globals={"snakemake": snakemake}
        )
    finally:
        slide.write_bytes(backup)
    log_text = (tmp_path / "stage1.log").read_text()
    assert "'empty_bag': 1" in log_text and "training-time cap max_instances=20" in log_text

    folds = pd.read_csv(cohort.folds, sep="\t", dtype={"patient_id": str})
    fold1 = folds[folds["fold"] == 1].set_index("patient_id")["part"]
    with np.load(outputs["embeddings"][0], allow_pickle=False) as emb:
        assert set(emb.files) == {"patient_id", "part", "z"}
        pids, parts, z = emb["patient_id"].tolist(), emb["part"].tolist(), emb["z"]
    assert z.dtype == np.float32 and z.shape == (len(pids), 64) and np.isfinite(z).all()
    assert empty_pid not in pids and sorted(pids) == sorted(set(fold1.index) - {empty_pid})
    assert parts == [fold1[p] for p in pids] and set(parts) == {"train", "val", "test"}

    pred = read_predictions(outputs["predictions"][0])
    assert set(pred["method"]) == {"wsi_clam"} and set(pred["part"]) == {"val", "test"}
    assert set(pred["fold"]) == {1} and set(pred["seed"]) == {1}
    assert sorted(pred["patient_id"]) == sorted(
        p for p, part in zip(pids, parts, strict=True) if part != "train"
    )
    np.testing.assert_allclose(pred["prob"], 1 / (1 + np.exp(-pred["risk"])), rtol=1e-5)

    log = pd.read_csv(outputs["train_log"][0], sep="\t")
    assert list(log.columns) == ["epoch", "train_loss", "val_loss", "val_score", "lr", "best"]
    assert len(log) == 4 and log["best"].sum() == 1
    assert Path(outputs["loss_curve"][0]).read_bytes()[:4] == b"\x89PNG"

    payload = torch.load(outputs["model"][0], weights_only=True)
    assert payload["meta"]["pmod"] == "wsi" and payload["meta"]["fold"] == 1
    assert payload["meta"]["seed"] == fold_seed(1, 1) and payload["meta"]["selected_by"] == "val"
    model = GatedAttentionMIL.from_checkpoint(payload).eval()
    from haf.mil.bags import BagStore

    store = BagStore.for_pathology_model("wsi", manifest=cohort.manifest, wsi_dim=DIM)
    i = pids.index("001")
    with torch.no_grad():
        out = model(torch.from_numpy(store.read("001")))
        assert np.allclose(out.z.numpy()[0], z[i], atol=1e-5)

    # attention.h5: every embedded patient, its part and risk, the forward's attention over the full bag
    attention = read_attention(outputs["attention"][0])
    assert (attention.pmod, attention.fold, attention.method) == ("wsi", 1, "wsi_clam")
    assert sorted(attention.patients) == sorted(pids)
    risk = pred.set_index("patient_id")["risk"]
    for pid, bag in attention.patients.items():
        assert bag.part == fold1[pid] and bag.n == store.n_instances(pid)
        assert abs(float(bag.attention.astype(np.float64).sum()) - 1) < 1e-6
        if pid in risk.index:
            assert bag.risk == pytest.approx(risk[pid], abs=1e-5)
    np.testing.assert_allclose(
        attention.patients["001"].attention, out.attention[0].numpy(), rtol=0, atol=1e-6
    )
    assert attention.patients["001"].source_modality == ("wsi",) * len(store.sources["001"].files)


def test_same_config_gives_identical_results(cohort):
    a = _run(cohort, "wsi_tma", max_epochs=3, cache_gb_cpu=0)  # lazy h5 reads
    b = _run(cohort, "wsi_tma", max_epochs=3)  # RAM cache
    pd.testing.assert_frame_equal(a.predictions, b.predictions)
    np.testing.assert_array_equal(a.embeddings["z"], b.embeddings["z"])


def test_one_class_training_part_is_a_clear_error(cohort, tmp_path):
    targets = pd.read_csv(cohort.targets, sep="\t", dtype={"patient_id": str})
    folds = pd.read_csv(cohort.folds, sep="\t", dtype={"patient_id": str})
    test0 = set(folds.loc[(folds["fold"] == 2) & (folds["part"] == "test"), "patient_id"])
    targets["label"] = targets["patient_id"].isin(test0).astype(int)
    path = tmp_path / "targets.tsv"
    targets.to_csv(path, sep="\t", index=False)
    with pytest.raises(
        HafInputError, match=r"fold 2: the training part of pathology model tma has only class 0"
    ):
        run_stage1(
            pmod="tma",
            fold=2,
            manifest=cohort.manifest,
            targets=path,
            folds=cohort.folds,
            tma_index=cohort.tma_index,
            section=SECTION,
            device=torch.device("cpu"),
        )
