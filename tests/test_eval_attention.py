"""fig_attention's library (haf.eval.attention): which patients, the CSV's numbers, the figure files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fakes.evaluation import fake_cohort, write_fake_attention

from haf.artifacts.attention import attention_index, read_attention
from haf.errors import HafInputError
from haf.eval.attention import CSV_COLUMNS, choose_patients, draw_attention, percentile, ranking

LABELS = {"tma": "TMA-CLAM", "wsi": "WSI-CLAM"}


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("attention")
    _, folds, _, _ = fake_cohort(24, 3, seed=4)
    test = folds[(folds["fold"] == 1) & (folds["part"] == "test")]["patient_id"].tolist()
    files = write_fake_attention(root, folds, 1, without_image=(test[0],))
    return dict(root=root, folds=folds, files=files, no_image=test[0], other=test[1])


def test_percentile_and_ranking_by_hand():
    a = np.array([0.1, 0.4, 0.1, 0.3, 0.1])
    # share of the bag's instances with attention <= each one's
    np.testing.assert_allclose(percentile(a), [0.6, 1.0, 0.6, 0.8, 0.6])
    np.testing.assert_array_equal(ranking(a), [1, 3, 0, 2, 4])  # ties: lower index first


def test_default_patients_are_the_top_and_bottom_risk_test_patients(fake):
    chosen = choose_patients(fake["files"], None)
    assert [(p, s) for p, _, s in chosen] == [
        ("tma", "highest risk"), ("tma", "lowest risk"), ("wsi", "highest risk"), ("wsi", "lowest risk"),
    ]  # fmt: skip
    for pmod, pid, selection in chosen:
        index = attention_index(fake["files"][pmod])
        test = index[index["part"] == "test"].set_index("patient_id")["risk"]
        assert pid == (test.idxmax() if selection == "highest risk" else test.idxmin())
        assert index["risk"].max() >= test.max()  # train/val patients may be riskier: never chosen
    listed = choose_patients(fake["files"], [fake["other"], fake["no_image"], fake["other"]])
    assert listed == [
        (m, q, "listed") for m in ("tma", "wsi") for q in (fake["other"], fake["no_image"])
    ]  # in the listed order, once each
    with pytest.raises(HafInputError, match="attention_patients: 999 in none of these attention files"):
        choose_patients(fake["files"], [fake["other"], "999"])


def test_figure_and_csv_on_fake_attention(fake, tmp_path):
    out = {k: tmp_path / f"attention.{k}" for k in ("pdf", "png")}
    patients = [fake["other"], fake["no_image"]]  # the second one's core images are missing: drawn without
    table = draw_attention(fake["files"], fold=1, patients=patients, top_k=3, labels=LABELS, title="t", **out)
    assert out["pdf"].read_bytes()[:4] == b"%PDF" and out["png"].stat().st_size > 5000
    assert list(table.columns) == CSV_COLUMNS
    for (pmod, pid), rows in table.groupby(["pmod", "patient_id"]):
        bag = read_attention(fake["files"][pmod], [pid]).patients[pid]
        assert len(rows) == bag.n and (rows["fold"] == 1).all() and (rows["selection"] == "listed").all()
        np.testing.assert_allclose(rows["attention"], bag.attention, rtol=1e-6)
        np.testing.assert_array_equal(rows[["x", "y"]].to_numpy(), bag.coords)
        assert sorted(rows["rank"]) == list(range(1, bag.n + 1))
        assert rows.loc[rows["rank"] == 1, "attention"].iloc[0] == pytest.approx(bag.attention.max())
        assert rows.loc[rows["rank"] == 1, "percentile"].iloc[0] == 1.0
        if pmod == "tma":
            expected = np.asarray(bag.core_files)[bag.core]
            assert rows["core_file"].tolist() == expected.tolist() and (rows["core"] >= 0).all()
        else:
            assert (rows["core"] == -1).all() and (rows["core_file"].fillna("") == "").all()
    # byte-stable: the same figure twice gives the same PDF
    again = {k: tmp_path / f"again.{k}" for k in ("pdf", "png")}
    second = draw_attention(
        fake["files"], fold=1, patients=patients, top_k=3, labels=LABELS, title="t", **again
    )
    assert again["pdf"].read_bytes() == out["pdf"].read_bytes()
    pd.testing.assert_frame_equal(table, second)


def test_bags_without_core_records_or_coords_are_drawn(tmp_path):
    """Precomputed TMA features (no per-core record, no core image) and WSI bags without coords (zeros)."""
    from haf.artifacts.attention import BagAttention, write_attention

    rng = np.random.default_rng(5)

    def bag(pid: str, pmod: str, n: int, coords) -> BagAttention:
        a = rng.dirichlet(np.ones(n)).astype(np.float32)
        return BagAttention(
            pid, "test", float(rng.normal()), a / a.sum(), np.asarray(coords), np.zeros(n, np.int32),
            np.full(n, -1, np.int32), (f"{pid}.h5",), (pmod,), (float("nan"),),
        )  # fmt: skip

    files = {"tma": tmp_path / "tma.h5", "wsi": tmp_path / "wsi.h5"}
    write_attention(files["tma"], [bag("001", "tma", 6, rng.integers(0, 500, (6, 2)))], pmod="tma", fold=0)
    write_attention(files["wsi"], [bag("001", "wsi", 5, np.zeros((5, 2)))], pmod="wsi", fold=0)
    out = {k: tmp_path / f"a.{k}" for k in ("pdf", "png")}
    table = draw_attention(files, fold=0, patients=None, top_k=2, labels=LABELS, title="t", **out)
    assert out["pdf"].read_bytes()[:4] == b"%PDF" and len(table) == 11
    assert set(table["selection"]) == {"highest risk"}  # one test patient: highest and lowest are one
