"""Stage 2: the SVD global-alignment loss (Eq. 5-7), its numerical traps, CLIP, and the trainer."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fakes.config import load_config
from fakes.fusion import synthetic_fold_inputs

from haf.alignment.losses import (
    clip_alignment_loss,
    direction_loss,
    dominant_direction,
    global_alignment_loss,
    observed_groups,
    singular_value_loss,
    top_right_singular_vector,
)
from haf.alignment.train import load_projectors, project_all, train_alignment, write_alignment_outputs
from haf.errors import HafInputError
from haf.modalities import MODALITIES

GA = dict(tau_sv=0.1, tau_pd=0.1, lambda_pd=0.01)
D = 128


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _stage2_cfg(**over):
    cfg = dict(
        d_out=16,
        hidden=32,
        tau_sv=0.1,
        tau_pd=0.1,
        lambda_pd=0.01,
        tau_clip=0.07,
        lr=1e-3,
        weight_decay=1e-5,
        max_epochs=15,
        batch_size=32,
        es_patience=10,
        lr_patience=15,
        lr_factor=0.5,
        seed=2,
    )
    cfg.update(over)
    return load_config({"stage2": cfg})["stage2"]


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def _grad_of_ga(u, present):
    u = u.clone().requires_grad_(True)
    terms = global_alignment_loss(u, present, **GA)
    terms.loss.backward()
    return terms, u.grad


def test_finite_gradient_rank_one_patient():
    v = _unit(D)
    u = torch.cat([v.expand(1, 7, D), _unit(3, 7, D, seed=1)])  # patient 0: seven identical columns
    terms, grad = _grad_of_ga(u, torch.ones(4, 7, dtype=torch.bool))
    assert torch.isfinite(terms.loss) and torch.isfinite(grad).all()
    sigma = torch.linalg.svdvals(u[0].T)
    assert sigma[0].item() == pytest.approx(7**0.5, rel=1e-5) and sigma[1:].abs().max() < 1e-5


def test_finite_gradient_tied_top_singular_values():
    # orthonormal columns: every singular value is 1 (ties at the top); near-tie: tiny perturbation
    eye = torch.eye(D)[:4]
    near = F.normalize(eye + 1e-7 * torch.randn(4, D, generator=torch.Generator().manual_seed(3)), dim=1)
    u = torch.zeros(3, 7, D)
    u[0, :4] = eye
    u[1, :4] = near
    u[2, :4] = _unit(4, D, seed=4)
    present = torch.zeros(3, 7, dtype=torch.bool)
    present[:, :4] = True
    terms, grad = _grad_of_ga(u, present)
    assert torch.isfinite(terms.loss) and torch.isfinite(grad).all()
    assert grad[:, 4:].abs().max() == 0, "absent slots get no gradient"


def test_two_of_seven_modalities_uses_only_those_columns():
    u = _unit(2, 7, D, seed=5)
    present = torch.zeros(2, 7, dtype=torch.bool)
    present[0, [1, 5]] = True
    present[1, [0, 2, 6]] = True
    terms, grad = _grad_of_ga(u, present)
    assert torch.isfinite(grad).all() and terms.n_patients == 2
    assert (grad[~present] == 0).all()
    # L_SV of patient 0 equals the loss of its 2-column matrix alone (no zero columns)
    sigma = torch.linalg.svdvals(torch.stack([u[0, 1], u[0, 5]], dim=1))
    assert sigma.shape == (2,)
    groups = observed_groups(present)
    assert sorted(groups) == [2, 3] and groups[2][1].tolist() == [[1, 5]]
    single = singular_value_loss(sigma.unsqueeze(0), GA["tau_sv"])
    both = torch.stack(
        [
            singular_value_loss(sigma.unsqueeze(0), 0.1)[0],
            singular_value_loss(torch.linalg.svdvals(u[1, [0, 2, 6]].T).unsqueeze(0), 0.1)[0],
        ]
    )
    assert terms.sv.item() == pytest.approx(both.mean().item(), rel=1e-5)
    # two unit columns with cosine c: singular values sqrt(1 + |c|) >= sqrt(1 - |c|), so (Eq. 5)
    # L_SV = log(1 + exp((sigma_2 - sigma_1) / tau)) in closed form
    c = abs(float(u[0, 1] @ u[0, 5]))
    closed = np.log1p(np.exp((np.sqrt(1 - c) - np.sqrt(1 + c)) / GA["tau_sv"]))
    assert single.item() == pytest.approx(closed, rel=1e-5)  # float32: measured rel. diff 9.5e-7


def test_sv_loss_decreases_as_columns_become_parallel():
    base = _unit(D, seed=6).double()  # float64: at tau 0.1 the loss gets tiny as columns line up
    noise = _unit(5, D, seed=7).double()
    losses = []
    for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        cols = F.normalize(t * base + (1 - t) * noise, dim=1)  # t = 1: all parallel
        sigma = torch.linalg.svdvals(cols.T).unsqueeze(0)
        losses.append(singular_value_loss(sigma, GA["tau_sv"]).item())
    assert all(a > b for a, b in zip(losses, losses[1:], strict=False)), losses


def test_pd_loss_invariant_to_flipping_q1_sign():
    cols = _unit(6, 4, D, seed=8)
    v1 = top_right_singular_vector(cols)
    flips = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0]).unsqueeze(1)
    q_a = dominant_direction(cols, v1)
    q_b = dominant_direction(cols, v1 * flips)  # the decomposition's arbitrary sign, flipped per patient
    torch.testing.assert_close(q_a, q_b)
    assert direction_loss(q_a, 0.1).item() == pytest.approx(direction_loss(q_b, 0.1).item())
    # q1 points along the sum of the columns, and is the true dominant left singular vector
    assert ((q_a * cols.sum(dim=1)).sum(dim=1) >= 0).all()
    left = torch.linalg.svd(cols[0].T, full_matrices=False).U[:, 0]
    assert abs(float(left @ q_a[0])) == pytest.approx(1.0, abs=1e-5)
    # without the sign alignment the loss would change: the test can fail
    assert direction_loss(q_a * flips, 0.1).item() != pytest.approx(direction_loss(q_a, 0.1).item())


def test_single_modality_patient_is_skipped():
    u = _unit(4, 7, D, seed=9)
    present = torch.ones(4, 7, dtype=torch.bool)
    present[3] = False
    present[3, 2] = True  # patient 3 has only cell densities
    terms, grad = _grad_of_ga(u, present)
    assert terms.n_patients == 3
    assert (grad[3] == 0).all()
    alone = global_alignment_loss(u[:3], present[:3], **GA)
    assert terms.loss.item() == pytest.approx(alone.loss.item(), rel=1e-5)
    nothing = global_alignment_loss(u[3:], present[3:], **GA)
    assert nothing.n_patients == 0 and nothing.loss.item() == 0.0


def test_clip_ignores_patients_without_wsi():
    u = _unit(5, 7, D, seed=10).requires_grad_(True)
    present = torch.ones(5, 7, dtype=torch.bool)
    present[4, 0] = False  # no WSI
    terms = clip_alignment_loss(u, present, tau=0.07, anchor=MODALITIES.index("wsi"))
    terms.loss.backward()
    assert torch.isfinite(terms.loss) and terms.n_patients == 4
    assert (u.grad[4] == 0).all()
    # perfectly paired embeddings give a lower loss than shuffled ones
    paired = u.detach().clone()
    paired[:, 1:] = paired[:, :1]
    assert (
        clip_alignment_loss(paired, present, tau=0.07).loss
        < clip_alignment_loss(u.detach(), present, tau=0.07).loss
    )


@pytest.mark.parametrize("align", ["ga", "clip"])
def test_stage2_trainer_outputs_and_untrained_modality(tmp_path, caplog, align):
    inputs = synthetic_fold_inputs(
        160, seed=11, dims={"wsi": 8, "tma": 8, "cell": 5, "clin": 4, "path": 6, "blood": 7, "icd": 5}
    )
    blood = MODALITIES.index("blood")
    train = inputs.index("train")
    inputs.present[train, blood] = False  # blood missing for the whole training part
    inputs.features["blood"][train] = 0
    lonely = train[0]  # a single-modality patient
    for j, m in enumerate(MODALITIES):
        if m != "clin":
            inputs.present[lonely, j] = False
            inputs.features[m][lonely] = 0
    inputs.present[lonely, MODALITIES.index("clin")] = True
    inputs.validate()
    with caplog.at_level(logging.INFO, logger="haf"):
        result = train_alignment(inputs, align, _stage2_cfg(), torch.device("cpu"))
    assert result.untrained == ["blood"] and "blood" not in result.trained
    assert "no training patient has modality 'blood'" in caplog.text
    for name, param in result.projectors.proj["blood"].state_dict().items():
        torch.testing.assert_close(param, result.initial.proj["blood"].state_dict()[name])
    assert not torch.equal(
        result.projectors.proj["wsi"].net[0].weight, result.initial.proj["wsi"].net[0].weight
    )
    out = {
        k: tmp_path / f"{k}.{ext}"
        for k, ext in (("projectors", "pt"), ("aligned", "npz"), ("train_log", "tsv"))
    }
    write_alignment_outputs(out, result, inputs, torch.device("cpu"))
    with np.load(out["aligned"]) as data:
        assert data["patient_id"].tolist() == inputs.patient_id.tolist()
        for m in MODALITIES:
            assert data[f"u_{m}"].shape == (inputs.n, 16) and data[f"pre_{m}"].shape == (inputs.n, 16)
            j = MODALITIES.index(m)
            norms = np.linalg.norm(data[f"u_{m}"], axis=1)
            np.testing.assert_allclose(norms[inputs.present[:, j]], 1.0, rtol=1e-5)
            assert (norms[~inputs.present[:, j]] == 0).all()
        u_wsi = data["u_wsi"]
    bank, meta = load_projectors(out["projectors"])
    assert meta["untrained"] == ["blood"] and meta["align"] == align
    np.testing.assert_allclose(project_all(bank, inputs, torch.device("cpu"))[:, 0], u_wsi, atol=1e-6)
    log_text = out["train_log"].read_text()
    assert "untrained" in log_text and "blood" in log_text


def test_stage2_training_reduces_validation_alignment_loss():
    inputs = synthetic_fold_inputs(
        200, seed=12, dims={"wsi": 8, "tma": 8, "cell": 5, "clin": 4, "path": 6, "blood": 7, "icd": 5}
    )
    result = train_alignment(inputs, "ga", _stage2_cfg(max_epochs=25), torch.device("cpu"))
    history = result.history
    assert history["val_loss"].min() < 0.5 * history["val_loss"].iloc[0]
    assert bool(history.loc[history["best"], "val_loss"].iloc[0] == history["val_loss"].min())


def test_nan_embedding_is_named_on_load(tmp_path):
    inputs = synthetic_fold_inputs(
        40, seed=13, dims={"wsi": 4, "tma": 4, "cell": 3, "clin": 3, "path": 3, "blood": 3, "icd": 3}
    )
    row = int(np.flatnonzero(inputs.present[:, 1])[2])
    inputs.features["tma"][row, 1] = np.nan
    inputs.save(tmp_path / "fold_0.npz")
    from haf.artifacts.fold_inputs import FoldInputs

    with pytest.raises(HafInputError, match=rf"'tma'.*patient {inputs.patient_id[row]}"):
        FoldInputs.load(tmp_path / "fold_0.npz")
