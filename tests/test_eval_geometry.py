"""The alignment geometry (haf.eval.geometry): pinned by hand examples, and the one source of the claims
table's row (e), Fig. 3's caption and the alignment-grid benchmark."""

from __future__ import annotations

import numpy as np
import pytest

from haf.artifacts.aligned import Aligned
from haf.eval import claims, figures, geometry
from haf.modalities import MODALITIES


def _aligned(pre: dict, post: dict, part: list[str]) -> Aligned:
    """An Aligned from a few modalities' vectors (the other modalities absent)."""
    n = len(part)
    d = len(next(iter(pre.values()))[0])
    present = np.zeros((n, len(MODALITIES)), dtype=bool)
    full_pre, full_post = {}, {}
    for j, m in enumerate(MODALITIES):
        full_pre[m] = np.zeros((n, d))
        full_post[m] = np.zeros((n, d))
        if m in pre:
            for i, (a, b) in enumerate(zip(pre[m], post[m], strict=True)):
                if a is not None:
                    present[i, j] = True
                    full_pre[m][i], full_post[m][i] = a, b
    return Aligned(
        patient_id=np.array([f"{i:03d}" for i in range(n)]),
        part=np.array(part),
        present=present,
        pre=full_pre,
        post=full_post,
    )


def test_cosine_and_sigma1_share_by_hand():
    s = np.sqrt(0.5)
    # cosines of e1, e2, (e1+e2)/sqrt2: 0, 1/sqrt2, 1/sqrt2 -> mean sqrt(2)/3
    assert geometry.mean_pairwise_cosine(np.array([[1, 0], [0, 1], [s, s]])) == pytest.approx(
        np.sqrt(2) / 3, abs=1e-12
    )
    assert geometry.mean_pairwise_cosine(np.array([[2.0, 0], [-5.0, 0]])) == pytest.approx(-1.0)
    assert np.isnan(geometry.mean_pairwise_cosine(np.array([[1.0, 0.0]])))
    # rank 1 -> 1; identity -> 1/3; diag(3, 4) -> 16 / 25
    rank1 = np.outer([1.0, -2.0, 3.0], [0.5, 0.1, 2.0, -1.0])
    assert geometry.sigma1_share(rank1) == pytest.approx(1.0, abs=1e-12)
    assert geometry.sigma1_share(np.eye(3)) == pytest.approx(1 / 3, abs=1e-12)
    assert geometry.sigma1_share(np.diag([3.0, 4.0])) == pytest.approx(16 / 25, abs=1e-12)
    assert np.isnan(geometry.sigma1_share(np.zeros((2, 3))))


def _hand_example() -> Aligned:
    # two test patients with modalities wsi and clin (2-d), one training patient that must be ignored
    pre = {"wsi": [[2.0, 1.0], [0.0, 1.0], [9.0, 9.0]], "clin": [[1.0, 3.0], [1.0, 1.0], None]}
    post = {"wsi": [[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], "clin": [[2.0, 0.0], [0.0, 3.0], None]}
    return _aligned(pre, post, ["test", "test", "train"])


def test_patient_geometry_and_summary_by_hand():
    a = _hand_example()
    g = geometry.patient_geometry(a, "test")
    assert list(g["patient_id"]) == ["000", "001"]
    # before, uncentred: cos((2,1),(1,3)) = 5/sqrt(50); cos((0,1),(1,1)) = 1/sqrt(2)
    assert g["cosine_before_raw"].tolist() == pytest.approx([5 / np.sqrt(50), 1 / np.sqrt(2)])
    # sigma_1^2 share of [[2,1],[1,3]] (eigenvalues (5 +- sqrt5)/2) and of [[0,1],[1,1]] ((1 +- sqrt5)/2)
    share = ((5 + np.sqrt(5)) / 2) ** 2 / 15
    assert g["share_before_raw"].tolist() == pytest.approx([share, ((1 + np.sqrt(5)) / 2) ** 2 / 3])
    # centred before: wsi mean (1,1) -> (1,0),(-1,0); clin mean (1,2) -> (0,1),(0,-1): orthogonal, share 1/2
    assert g["cosine_before"].tolist() == pytest.approx([0.0, 0.0])
    assert g["share_before"].tolist() == pytest.approx([0.5, 0.5])
    # after, uncentred: each patient's two vectors are parallel: cosine 1, rank 1
    assert g["cosine_after_raw"].tolist() == pytest.approx([1.0, 1.0])
    assert g["share_after_raw"].tolist() == pytest.approx([1.0, 1.0])
    # after, centred: wsi (0.5,-0.5),(-0.5,0.5); clin (1,-1.5),(-1,1.5): cos = 1.25/(sqrt0.5 sqrt3.25)
    c = 1.25 / (np.sqrt(0.5) * np.sqrt(3.25))
    assert g["cosine_after"].tolist() == pytest.approx([c, c])
    s = geometry.geometry_summary(a, "test")
    assert s["n_patients"] == 2
    assert s["cos_within_raw_before"] == pytest.approx((5 / np.sqrt(50) + 1 / np.sqrt(2)) / 2)
    assert s["cos_within_after"] == pytest.approx(c)
    # cross-patient, same modality (uncentred, test part only): wsi cos((2,1),(0,1)) = 1/sqrt5,
    # clin cos((1,3),(1,1)) = 4/sqrt20; after: wsi 0, clin 0
    assert s["cos_same_mod_raw_before"] == pytest.approx((1 / np.sqrt(5) + 4 / np.sqrt(20)) / 2)
    assert s["cos_same_mod_raw_after"] == pytest.approx(0.0)


def _random_aligned(n: int = 14, seed: int = 3) -> Aligned:
    rng = np.random.default_rng(seed)
    present = rng.random((n, len(MODALITIES))) < 0.6
    present[:, 0] = True
    shared = rng.normal(size=(n, 8))
    pre, post = {}, {}
    for j, m in enumerate(MODALITIES):
        b = rng.normal(size=(n, 8)) + 3 * rng.normal(size=8)
        a = shared + 0.4 * rng.normal(size=(n, 8))
        pre[m] = b / np.linalg.norm(b, axis=1, keepdims=True) * present[:, [j]]
        post[m] = a / np.linalg.norm(a, axis=1, keepdims=True) * present[:, [j]]
    part = np.array(["test"] * (n - 4) + ["train"] * 4)
    return Aligned(np.array([f"{i:03d}" for i in range(n)]), part, present, pre, post)


def test_fig3_caption_shows_the_geometry_summary(tmp_path, monkeypatch):
    a = _random_aligned()
    drawn = []
    monkeypatch.setattr(
        figures, "save_figure", lambda fig, pdf, png: drawn.append([t.get_text() for t in fig.texts])
    )
    points, frame, caption = figures.fig3_tsne(
        a, fold=2, seed=0, title="t", pdf=tmp_path / "f.pdf", png=tmp_path / "f.png"
    )
    summary = geometry.geometry_summary(a, "test")
    assert caption == geometry.geometry_caption(summary, 2, "test")
    assert caption in drawn[0]  # printed under the panels
    for key in ("cos_within_raw", "cos_same_mod_raw", "share_raw", "cos_within", "share"):
        assert f"{summary[f'{key}_before']:.3f} -> {summary[f'{key}_after']:.3f}" in caption, key
    row = frame.iloc[0]
    assert row["fold"] == 2 and row["part"] == "test"
    for key, value in summary.items():
        assert row[key] == pytest.approx(value, abs=0)
    assert len(points) == int(a.present[a.part == "test"].sum())


def test_claims_row_e_uses_the_same_function():
    assert claims.patient_geometry is geometry.patient_geometry  # one function, not a copy
    a = _random_aligned()
    rows = claims.geometry_rows({0: a}, repeats=None, n_boot=50, seed=1, ratio=0.25)
    summary = geometry.geometry_summary(a, "test")
    by_name = {r.metric.split(" ")[0]: r for r in rows}
    assert by_name["within-patient"].effect == pytest.approx(
        summary["cos_within_after"] - summary["cos_within_before"], abs=1e-12
    )
    assert by_name["sigma_1^2"].effect == pytest.approx(
        summary["share_after"] - summary["share_before"], abs=1e-12
    )
