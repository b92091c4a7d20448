"""Stage 1 bag store: which files make a bag, lazy reads, subsampling, and the bad inputs."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from haf.artifacts.bags import write_bag
from haf.errors import HafInputError
from haf.mil.bags import BagStore, CapReport

torch.set_num_threads(1)
DIM = 8


def _bag(path, n, dim=DIM, seed=0, attrs=None):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    write_bag(path, x, np.zeros((n, 2), np.int32), attrs)
    return x


def _manifest(tmp_path, rows):
    path = tmp_path / "manifest.tsv"
    pd.DataFrame(
        [
            {"patient_id": pid, "has_wsi": int(bool(files)), "wsi_files": ";".join(map(str, files))}
            for pid, files in rows
        ]
    ).to_csv(path, sep="\t", index=False)
    return path


def _index(tmp_path, rows):
    path = tmp_path / "tma" / "index.tsv"
    path.parent.mkdir(exist_ok=True)
    pd.DataFrame(
        [
            {
                "patient_id": p,
                "h5_path": str(h) if h else "",
                "n_cores": 1,
                "n_tiles": 0,
                "n_empty_cores": 0,
                "status": s,
            }
            for p, h, s in rows
        ],
        columns=["patient_id", "h5_path", "n_cores", "n_tiles", "n_empty_cores", "status"],
    ).to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture()
def cohort(tmp_path):
    """001: slide + _a slide; 002: one slide; 003: empty slide; 004: no WSI.  TMA: 001 ok, 002 empty, 004 ok."""
    a = _bag(tmp_path / "PrimaryTumor_HE_001.h5", 5, seed=1)
    a2 = _bag(tmp_path / "PrimaryTumor_HE_001_a.h5", 3, seed=2)
    b = _bag(tmp_path / "PrimaryTumor_HE_002.h5", 7, seed=3)
    with h5py.File(tmp_path / "PrimaryTumor_HE_003.h5", "w") as h:  # HANCOTHON's missing slide: an empty list
        h.create_dataset("features", data=np.zeros(0, np.float32))
    manifest = _manifest(
        tmp_path,
        [
            ("001", [tmp_path / "PrimaryTumor_HE_001.h5", tmp_path / "PrimaryTumor_HE_001_a.h5"]),
            ("002", [tmp_path / "PrimaryTumor_HE_002.h5"]),
            ("003", [tmp_path / "PrimaryTumor_HE_003.h5"]),
            ("004", []),
        ],
    )
    (tmp_path / "tma" / "h5").mkdir(parents=True)
    t1 = _bag(tmp_path / "tma" / "h5" / "001.h5", 4, seed=4, attrs={"feature_dim": DIM})
    t4 = _bag(tmp_path / "tma" / "h5" / "004.h5", 6, seed=5, attrs={"feature_dim": DIM})
    index = _index(
        tmp_path,
        [("001", "h5/001.h5", "ok"), ("002", "", "empty"), ("004", tmp_path / "tma" / "h5" / "004.h5", "ok")],
    )
    return dict(manifest=manifest, index=index, a=a, a2=a2, b=b, t1=t1, t4=t4)


def test_wsi_bags_pool_a_slides_and_count_empty_and_missing(cohort):
    store = BagStore.for_pathology_model("wsi", manifest=cohort["manifest"], wsi_dim=DIM)
    assert store.patient_ids == ["001", "002"]
    assert store.counts == {"empty_bag": 1, "no_wsi_files": 1}
    assert store.n_instances("001") == 8
    np.testing.assert_array_equal(store.read("001"), np.concatenate([cohort["a"], cohort["a2"]]))


def test_tma_bags_from_index_relative_paths_and_status(cohort):
    store = BagStore.for_pathology_model("tma", tma_index=cohort["index"])
    assert store.patient_ids == ["001", "004"] and store.dim == DIM
    assert store.counts == {"status_empty": 1}
    np.testing.assert_array_equal(store.read("001"), cohort["t1"])  # h5_path relative to the index's folder


def test_wsi_tma_concatenates_both_bags(cohort):
    store = BagStore.for_pathology_model(
        "wsi_tma", manifest=cohort["manifest"], tma_index=cohort["index"], wsi_dim=DIM
    )
    assert store.patient_ids == ["001", "002", "004"]
    np.testing.assert_array_equal(
        store.read("001"), np.concatenate([cohort["a"], cohort["a2"], cohort["t1"]])
    )
    assert store.counts["both"] == 1 and store.counts["only_wsi"] == 1 and store.counts["only_tma"] == 1
    both = BagStore.for_pathology_model(
        "wsi_tma", manifest=cohort["manifest"], tma_index=cohort["index"], wsi_dim=DIM, require_both=True
    )
    assert both.patient_ids == ["001"] and both.counts["dropped_not_both"] == 2


def test_wsi_tma_width_mismatch_is_a_clear_error(cohort, tmp_path):
    _bag(tmp_path / "tma" / "h5" / "004.h5", 6, dim=DIM + 4, attrs={"feature_dim": DIM + 4})
    _bag(tmp_path / "tma" / "h5" / "001.h5", 4, dim=DIM + 4, attrs={"feature_dim": DIM + 4})
    with pytest.raises(HafInputError, match=r"one width: WSI bags are 8-d .* TMA bags are 12-d"):
        BagStore.for_pathology_model(
            "wsi_tma", manifest=cohort["manifest"], tma_index=cohort["index"], wsi_dim=DIM
        )


def test_wsi_width_differs_from_config(cohort):
    with pytest.raises(
        HafInputError, match=r"PrimaryTumor_HE_001.h5.*8-d but wsi bags must be stage1.wsi_dim = 1024"
    ):
        BagStore.for_pathology_model("wsi", manifest=cohort["manifest"], wsi_dim=1024)


def test_tma_files_of_different_widths(cohort, tmp_path):
    _bag(tmp_path / "tma" / "h5" / "004.h5", 6, dim=DIM + 1)
    with pytest.raises(HafInputError, match=r"004.h5.*9-d but tma bags must be 8-d like"):
        BagStore.for_pathology_model("tma", tma_index=cohort["index"])


def test_nan_in_features_names_file_and_row(cohort, tmp_path):
    x = np.ones((6, DIM), np.float32)
    x[4, 2] = np.inf
    write_bag(tmp_path / "PrimaryTumor_HE_002.h5", x, np.zeros((6, 2), np.int32))
    store = BagStore.for_pathology_model("wsi", manifest=cohort["manifest"], wsi_dim=DIM)
    with pytest.raises(HafInputError, match=r"PrimaryTumor_HE_002.h5, row 4.*NaN or inf"):
        store.batch(["001", "002"])
    with pytest.raises(HafInputError, match=r"row 4"):
        store.cache(torch.device("cpu"), 1e9)


def test_missing_file_names_the_manifest_row(cohort, tmp_path):
    _manifest(tmp_path, [("001", [tmp_path / "nope.h5"])])
    with pytest.raises(HafInputError, match=r"manifest.tsv, row 2, field 'wsi_files': file not found"):
        BagStore.for_pathology_model("wsi", manifest=cohort["manifest"], wsi_dim=DIM)


def test_batches_are_lazy_padded_and_match_the_cache(cohort, monkeypatch):
    store = BagStore.for_pathology_model(
        "wsi_tma", manifest=cohort["manifest"], tma_index=cohort["index"], wsi_dim=DIM
    )
    reads = []
    original = store.read
    monkeypatch.setattr(store, "read", lambda pid: reads.append(pid) or original(pid))
    batch = store.batch(["004", "zzz", "001"])  # any ids: one without a bag is an all-padding row
    assert len(reads) == 2  # only the requested bags were read
    assert batch.x.shape == (3, 12, DIM) and batch.n.tolist() == [6, 0, 12]
    assert batch.present.tolist() == [True, False, True]
    assert batch.mask.sum(1).tolist() == [6, 0, 12] and torch.all(batch.x[~batch.mask] == 0)
    packed = store.batch(["004", "zzz", "001"], packed=True)
    assert packed.x.shape == (18, DIM) and torch.equal(packed.x, batch.x[batch.mask])
    lazy = [store.batch(["001", "004"], max_instances=5, rng=np.random.default_rng(7)) for _ in range(2)]
    assert store.cache(torch.device("cpu"), 1e9) and store.cached
    cached = store.batch(["001", "004"], max_instances=5, rng=np.random.default_rng(7))
    assert torch.equal(lazy[0].x, cached.x) and torch.equal(lazy[0].mask, cached.mask)
    assert lazy[0].n.tolist() == [5, 5]
    rows = {tuple(r.tolist()) for r in lazy[0].x[0]}
    full = {tuple(r.tolist()) for r in torch.from_numpy(store.read("001"))}
    assert rows <= full  # a subsample of the real instances, without replacement
    assert not store.cache(torch.device("cpu"), 10)  # over budget: stays lazy


def test_plans_cover_every_patient_once_and_respect_the_budget(cohort):
    store = BagStore.for_pathology_model(
        "wsi_tma", manifest=cohort["manifest"], tma_index=cohort["index"], wsi_dim=DIM
    )
    ids = ["001", "002", "004", "999"]
    train = store.plan(ids, batch_bags=2, shuffle=True, rng=np.random.default_rng(0))
    assert sorted(p for b in train for p in b) == ["001", "002", "004"] and max(map(len, train)) <= 2
    evaluation = store.plan(ids, batch_bags=2, shuffle=False, instance_budget=14)
    assert sorted(p for b in evaluation for p in b) == ["001", "002", "004"]
    assert all(len(b) * max(store.n_instances(p) for p in b) <= 14 or len(b) == 1 for b in evaluation)
    report = CapReport.of(store, ids, 10)
    assert (report.n_bags, report.n_capped, report.instances_before, report.instances_after) == (3, 1, 25, 23)
