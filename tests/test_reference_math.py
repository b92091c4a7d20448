"""Reference values for the training math, computed outside the code under test.

Every test builds a hand-sized example, computes the expected value with an independent
implementation (plain Python or numpy loops written from the paper's formula, numpy's SVD) and,
where the example is fixed, also against the literal value written here.  Tolerances come from the
measured difference (noted next to each), not loose by default.

Formulas: Cox partial likelihood (Breslow, Efron), CLAM Eq. 1-3 (``haf.mil.clam``), the SVD global
alignment Eq. 5-7 (``haf.fusion.alignment``), MoFe and the fusion loss Eq. 10-11
(``haf.fusion.model``), GCS steering on a quadratic with known curvature (``haf.comparators.gcs``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fakes.config import settings
from torch import nn

from haf.alignment.losses import (
    alignment_loss,
    clip_alignment_loss,
    direction_loss,
    dominant_direction,
    global_alignment_loss,
    observed_groups,
)
from haf.comparators.gcs import GCSConfig, GCSStats, GCSStep, controller, rademacher, sam_perturbation
from haf.fusion import model as fusion_model
from haf.fusion.model import FusionHead, fusion_loss
from haf.losses import binary_loss, cox_partial_likelihood
from haf.mil.clam import GatedAttentionMIL, clam_loss, instance_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _logsumexp(values) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _bce(logit: float, y: float) -> float:
    """Binary cross-entropy of one logit, written out: -(y log s + (1 - y) log(1 - s))."""
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


# ---------------------------------------------------------------------------------------------
# Cox partial likelihood
# ---------------------------------------------------------------------------------------------
def _cox_reference(risk, time, event, ties: str) -> float:
    """-(1 / n_events) log PL, from the textbook formula with explicit loops over the event times."""
    n = len(risk)
    total = 0.0
    for t in sorted({time[i] for i in range(n) if event[i]}):
        dead = [i for i in range(n) if time[i] == t and event[i]]
        at_risk = [j for j in range(n) if time[j] >= t]
        risk_set = sum(math.exp(risk[j]) for j in at_risk)
        tied = sum(math.exp(risk[i]) for i in dead)
        d = len(dead)
        for ell, i in enumerate(dead):
            denom = risk_set - (ell / d) * tied if ties == "efron" else risk_set
            total += risk[i] - math.log(denom)
    return -total / sum(event)


# a tie of three events at t = 2 with a censored patient at the same time (in the risk set, not the
# tie), a tie of two at t = 5, a censored patient last
COX_RISK = [0.5, -0.2, 0.3, 1.1, 0.1, -1.0, 0.7, -0.4]
COX_TIME = [1.0, 2.0, 2.0, 2.0, 2.0, 5.0, 5.0, 7.0]
COX_EVENT = [1, 1, 1, 1, 0, 1, 1, 0]
# _cox_reference on this example, written down once (pins the reference itself)
COX_LITERAL = {"breslow": 1.6545294767, "efron": 1.4611362371}


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_cox_partial_likelihood_matches_the_textbook_formula(ties):
    expected = _cox_reference(COX_RISK, COX_TIME, COX_EVENT, ties)
    assert expected == pytest.approx(COX_LITERAL[ties], abs=1e-9)
    # shuffle the patients: the Efron rank within a tie must not depend on the input order
    perm = [6, 2, 0, 7, 4, 1, 5, 3]
    for order in (list(range(8)), perm):
        risk = torch.tensor([COX_RISK[i] for i in order], dtype=torch.float64)
        time = torch.tensor([COX_TIME[i] for i in order], dtype=torch.float64)
        event = torch.tensor([COX_EVENT[i] for i in order])
        got = cox_partial_likelihood(risk, time, event, ties=ties).item()
        assert got == pytest.approx(expected, abs=1e-12)  # measured |diff| <= 4.5e-16 in float64
    # float32 (what training uses): measured |diff| <= 1.1e-7
    got32 = cox_partial_likelihood(
        torch.tensor(COX_RISK), torch.tensor(COX_TIME), torch.tensor(COX_EVENT), ties=ties
    ).item()
    assert got32 == pytest.approx(expected, abs=1e-6)


def test_cox_gradient_matches_the_closed_form_breslow_score():
    # d(-log PL)/d r_k = -(1 / D) sum_i delta_i (1[k = i] - 1[t_k >= t_i] e^{r_k} / sum_{j in R_i} e^{r_j})
    risk = torch.tensor(COX_RISK, dtype=torch.float64, requires_grad=True)
    cox_partial_likelihood(
        risk, torch.tensor(COX_TIME, dtype=torch.float64), torch.tensor(COX_EVENT)
    ).backward()
    n, d = len(COX_RISK), sum(COX_EVENT)
    expected = np.zeros(n)
    for i in range(n):
        if not COX_EVENT[i]:
            continue
        at_risk = [j for j in range(n) if COX_TIME[j] >= COX_TIME[i]]
        s = sum(math.exp(COX_RISK[j]) for j in at_risk)
        expected[i] -= 1.0
        for k in at_risk:
            expected[k] += math.exp(COX_RISK[k]) / s
    np.testing.assert_allclose(risk.grad.numpy(), expected / d, atol=1e-12)


def test_cox_shift_invariance_and_sign():
    # adding a constant to every risk leaves the partial likelihood unchanged (the max-shift is exact)
    base = cox_partial_likelihood(
        torch.tensor(COX_RISK, dtype=torch.float64), torch.tensor(COX_TIME), torch.tensor(COX_EVENT)
    )
    shifted = cox_partial_likelihood(
        torch.tensor(COX_RISK, dtype=torch.float64) + 500.0, torch.tensor(COX_TIME), torch.tensor(COX_EVENT)
    )
    assert shifted.item() == pytest.approx(base.item(), abs=1e-10)
    # higher risk for earlier death gives a lower loss than the reverse ordering
    time = torch.tensor([1.0, 2.0, 3.0, 4.0])
    event = torch.tensor([1, 1, 1, 1])
    good = cox_partial_likelihood(-time, time, event)
    bad = cox_partial_likelihood(time, time, event)
    assert good.item() < bad.item()


def test_cox_edge_cases_no_event_dtype_and_bad_ties():
    # a batch without an event has no partial likelihood: exactly 0 whatever the risks, with a graph
    risk = torch.tensor([0.7, -1.2, 2.5], requires_grad=True)
    loss = cox_partial_likelihood(risk, torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(risk.grad, torch.zeros(3))
    # the loss has the risk's dtype whatever the dtypes of time and event
    for ties in ("breslow", "efron"):
        out = cox_partial_likelihood(
            torch.tensor(COX_RISK), torch.tensor(COX_TIME, dtype=torch.float64),
            torch.tensor(COX_EVENT, dtype=torch.float64), ties=ties,
        )  # fmt: skip
        assert out.dtype == torch.float32
    with pytest.raises(ValueError, match="ties must be 'breslow' or 'efron', got 'exact'"):
        cox_partial_likelihood(
            torch.tensor(COX_RISK), torch.tensor(COX_TIME), torch.tensor(COX_EVENT), "exact"
        )


def test_binary_loss_is_the_written_out_cross_entropy():
    logit = [2.0, -1.0, 0.3, -3.5]
    label = [1.0, 0.0, 0.0, 1.0]
    each = [_bce(z, y) for z, y in zip(logit, label, strict=True)]
    got = binary_loss(torch.tensor(logit, dtype=torch.float64), torch.tensor(label), reduction="none")
    np.testing.assert_allclose(got.numpy(), each, atol=1e-12)
    mean = binary_loss(torch.tensor(logit, dtype=torch.float64), torch.tensor(label))
    assert mean.item() == pytest.approx(sum(each) / 4, abs=1e-12)
    assert sum(each) / 4 == pytest.approx(1.2060738, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# CLAM, Eq. 1-3
# ---------------------------------------------------------------------------------------------
# a 2-d bag of five instances and every weight of a d1 = 3, d2 = 2 network, written out
BAG = np.array([[1.0, 0.5], [-0.3, 2.0], [0.8, -1.2], [1.5, 1.5], [-1.0, -0.2]])
W_FC = np.array([[1.0, 0.2], [-0.5, 1.0], [0.3, -0.8]])
B_FC = np.array([0.1, 0.0, 0.2])
W_V = np.array([[0.6, -0.4, 0.9], [-0.7, 0.5, 0.2]])  # tanh branch (attention_a)
B_V = np.array([0.05, -0.1])
W_U = np.array([[0.3, 0.8, -0.5], [0.4, -0.6, 0.7]])  # sigmoid branch (attention_b)
B_U = np.array([0.0, 0.1])
W_A = np.array([[1.2, -0.9]])
B_A = np.array([0.3])
W_CLS = np.array([[0.7, -1.1, 0.4]])
B_CLS = np.array([-0.2])
W_INST = np.array([[0.5, -0.3, 0.8], [-0.6, 0.9, 0.2]])  # row c: instance classifier of class c
B_INST = np.array([0.1, -0.1])


def _clam_model() -> GatedAttentionMIL:
    model = GatedAttentionMIL(2, d1=3, d2=2, dropout=0.0).eval()
    with torch.no_grad():
        for layer, w, b in (
            (model.fc[0], W_FC, B_FC),
            (model.attention_a[0], W_V, B_V),
            (model.attention_b[0], W_U, B_U),
            (model.attention_c, W_A, B_A),
            (model.classifier, W_CLS, B_CLS),
            (model.instance_classifiers, W_INST, B_INST),
        ):
            layer.weight.copy_(torch.tensor(w))
            layer.bias.copy_(torch.tensor(b))
    return model  # float32: the forward computes scores and z in float32 by design


def _clam_reference(label: int, k_sample: int, bag_weight: float) -> dict:
    """Eq. 1-3 of the HAF paper (CLAM_SB, binary), in numpy."""
    h = np.maximum(BAG @ W_FC.T + B_FC, 0.0)
    gated = np.tanh(h @ W_V.T + B_V) * (1.0 / (1.0 + np.exp(-(h @ W_U.T + B_U))))
    s = (gated @ W_A.T + B_A)[:, 0]  # Eq. 1 scores
    a = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    z = a @ h  # Eq. 2
    logit = float(z @ W_CLS[0] + B_CLS[0])
    bag = _bce(logit, label)
    k = min(k_sample, len(BAG) // 2)
    order = np.argsort(-s)
    top, bottom = order[:k], order[::-1][:k]
    inst_logit = h @ W_INST[label] + B_INST[label]  # the true class's instance classifier
    inst = (sum(_bce(inst_logit[i], 1.0) for i in top) + sum(_bce(inst_logit[i], 0.0) for i in bottom)) / (
        2 * k
    )
    return dict(a=a, z=z, logit=logit, bag=bag, inst=inst, total=bag_weight * bag + (1 - bag_weight) * inst)


CLAM_LITERAL = {
    # label -> (attention a, logit, bag BCE, instance loss) of the bag above, k_sample 2
    1: (
        [0.2857534857, 0.0533821769, 0.2134988928, 0.3367601208, 0.1106053237],
        0.2871022242,
        0.5598643355,
        1.2137242296,
    ),
    0: (
        [0.2857534857, 0.0533821769, 0.2134988928, 0.3367601208, 0.1106053237],
        0.2871022242,
        0.8469665597,
        0.4896317682,
    ),
}


@pytest.mark.parametrize("label", [1, 0])
def test_clam_attention_embedding_and_losses_match_the_equations(label):
    ref = _clam_reference(label, k_sample=2, bag_weight=0.7)
    a_lit, logit_lit, bag_lit, inst_lit = CLAM_LITERAL[label]
    np.testing.assert_allclose(ref["a"], a_lit, atol=1e-8)
    assert (ref["logit"], ref["bag"], ref["inst"]) == pytest.approx((logit_lit, bag_lit, inst_lit), abs=1e-8)
    model = _clam_model()
    x = torch.tensor(BAG, dtype=torch.float32).unsqueeze(0)
    mask = torch.ones(1, 5, dtype=torch.bool)
    out = model(x, mask)
    # float32 model: measured |diff| <= 6e-8 on a, z and the logit
    np.testing.assert_allclose(out.attention[0].detach().numpy(), ref["a"], atol=5e-7)
    np.testing.assert_allclose(out.z[0].detach().numpy(), ref["z"], atol=5e-7)
    assert out.logit.item() == pytest.approx(ref["logit"], abs=5e-7)
    loss = clam_loss(model, out, mask, torch.tensor([float(label)]), bag_weight=0.7, k_sample=2)
    # float32 losses: measured |diff| <= 1.5e-7
    assert loss.bag.item() == pytest.approx(ref["bag"], abs=1e-6)
    assert loss.instance.item() == pytest.approx(ref["inst"], abs=1e-6)
    assert loss.total.item() == pytest.approx(ref["total"], abs=1e-6)


def test_clam_k_clamped_to_half_the_bag_and_weight_mix():
    # k_sample 8 on a bag of five: k = 2 (never overlapping top and bottom)
    ref8 = _clam_reference(1, k_sample=8, bag_weight=0.3)
    ref2 = _clam_reference(1, k_sample=2, bag_weight=0.3)
    assert ref8["inst"] == ref2["inst"]
    model = _clam_model()
    mask = torch.ones(1, 5, dtype=torch.bool)
    out = model(torch.tensor(BAG, dtype=torch.float32).unsqueeze(0), mask)
    loss = clam_loss(model, out, mask, torch.tensor([1.0]), bag_weight=0.3, k_sample=8)
    assert loss.total.item() == pytest.approx(ref8["total"], abs=1e-6)
    k1 = _clam_reference(1, k_sample=1, bag_weight=0.3)
    loss1 = clam_loss(model, out, mask, torch.tensor([1.0]), bag_weight=0.3, k_sample=1)
    assert loss1.instance.item() == pytest.approx(k1["inst"], abs=1e-6)
    assert abs(k1["inst"] - ref2["inst"]) > 1e-2  # the example tells k = 1 from k = 2


def test_clam_architecture_defaults_and_initialisation():
    torch.manual_seed(0)
    model = GatedAttentionMIL(10)
    assert model.hparams == {"in_dim": 10, "d1": 64, "d2": 32, "dropout": 0.25}  # HAF's sizes
    assert model.fc[0].weight.shape == (64, 10) and model.attention_a[0].weight.shape == (32, 64)
    # CLAM_SB: dropout after w_l and after both gated-attention branches
    for block in (model.fc, model.attention_a, model.attention_b):
        assert isinstance(block[-1], nn.Dropout) and block[-1].p == 0.25
    # CLAM's initialize_weights: zero biases, Xavier-normal weights (std sqrt(2 / (fan_in + fan_out)))
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            assert torch.count_nonzero(layer.bias) == 0
    std = float(model.fc[0].weight.detach().std())
    assert std == pytest.approx(math.sqrt(2 / 74), rel=0.15)  # 640 draws: the SD's own error is ~3 %


def test_clam_mask_of_another_dtype_and_shape_errors():
    model = _clam_model()
    x = torch.tensor(np.stack([BAG, BAG[::-1]]), dtype=torch.float32)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    ref = model(x, mask.bool())
    for other in (mask, mask.float()):  # a 0/1 mask of another dtype means the same bags
        out = model(x, other)
        assert torch.equal(out.z, ref.z) and torch.equal(out.logit, ref.logit)
        packed = model(x[mask.bool()], other)
        assert torch.equal(packed.z, ref.z)
        inst = instance_loss(model, ref, other, torch.tensor([1.0, 0.0]), 2)
        assert torch.equal(inst, instance_loss(model, ref, mask.bool(), torch.tensor([1.0, 0.0]), 2))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 4\), expected \(2, 5\)"):
        model(x, mask[:, :4].bool())
    with pytest.raises(ValueError, match=r"a packed x needs a \(B, N\) mask, got shape \(8,\)"):
        model(x[mask.bool()], mask.bool().reshape(-1)[:8])
    with pytest.raises(ValueError, match=r"x must be \(B, N, D\).*got \(1, 2, 5, 2\)"):
        model(x[None, :, :, :], None)


def test_clam_loss_defaults_labels_and_valid_bags():
    model = _clam_model()
    x = torch.tensor(np.stack([BAG, BAG[::-1] * 0.5, BAG + 1.0]), dtype=torch.float32)
    mask = torch.ones(3, 5, dtype=torch.bool)
    out = model(x, mask)
    label = torch.tensor([1.0, 0.0, 1.0])
    default = clam_loss(model, out, mask, label)
    assert default.total.item() == clam_loss(model, out, mask, label, bag_weight=0.7, k_sample=8).total.item()
    # k_sample 8 by default: on a bag of 20 instances k = 8 (not 9, not 10)
    big = torch.tensor(np.random.default_rng(1).normal(size=(1, 20, 2)), dtype=torch.float32)
    big_out, big_mask = model(big, None), torch.ones(1, 20, dtype=torch.bool)
    ks = [clam_loss(model, big_out, big_mask, label[:1], k_sample=k).instance.item() for k in (8, 9)]
    assert (
        clam_loss(model, big_out, big_mask, label[:1]).instance.item() == ks[0] and abs(ks[0] - ks[1]) > 1e-4
    )
    # integer labels are labels too
    assert clam_loss(model, out, mask, torch.tensor([1, 0, 1])).total.item() == pytest.approx(
        default.total.item()
    )
    # valid leaves bags out: the mean over the others, as if they were not in the batch
    valid = torch.tensor([1, 0, 1])
    kept = clam_loss(model, out, mask, label, valid=valid)
    sub = model(x[[0, 2]], mask[[0, 2]])
    alone = clam_loss(model, sub, mask[[0, 2]], label[[0, 2]])
    assert kept.total.item() == pytest.approx(alone.total.item(), abs=1e-6)
    assert abs(kept.total.item() - default.total.item()) > 1e-3
    # a batch of single-instance or empty bags has no instance term: exactly 0, never NaN
    empty = torch.zeros(2, 1, dtype=torch.bool)
    none = model(torch.zeros(2, 1, 2), empty)
    inst = instance_loss(model, none, empty, torch.tensor([1.0, 0.0]), 8)
    assert torch.equal(inst, torch.zeros(2))


class _NotAWeight:
    pass


def test_clam_checkpoint_keeps_meta_and_loads_weights_only(tmp_path):
    model = _clam_model()
    payload = model.checkpoint(fold=2, modality="wsi")
    assert payload["meta"] == {"fold": 2, "modality": "wsi"} and payload["hparams"]["d1"] == 3
    torch.save(payload, tmp_path / "model.pt")
    back = GatedAttentionMIL.from_checkpoint(str(tmp_path / "model.pt"))
    assert torch.equal(back.instance_classifiers.weight, model.instance_classifiers.weight)
    # weights only: a checkpoint that carries a pickled object is refused, not executed
    torch.save({**payload, "meta": {"x": _NotAWeight()}}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="[Ww]eights only"):
        GatedAttentionMIL.from_checkpoint(str(tmp_path / "evil.pt"))


# ---------------------------------------------------------------------------------------------
# Stage 2 global alignment, Eq. 5-7
# ---------------------------------------------------------------------------------------------
def _unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


ALIGN_U = _unit_rows(
    np.array(
        [
            [[1.0, 0.2, 0.0], [0.8, 0.5, 0.1], [0.9, -0.1, 0.3]],
            [[0.1, 1.0, 0.2], [-0.3, 0.9, 0.0], [5.0, 5.0, 5.0]],
            [[2.0, 2.0, 2.0], [0.0, 0.3, 1.0], [0.4, -0.2, 0.9]],
            [[-1.0, 0.2, 0.1], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]],
            [[0.3, 0.3, -0.9], [1.0, 1.0, 1.0], [0.2, -1.0, 0.4]],
        ]
    )
)
# patient 1: slots 0, 1; patient 2: slots 1, 2; patient 3: slot 1 only (no alignment term)
ALIGN_PRESENT = np.array([[1, 1, 1], [1, 1, 0], [0, 1, 1], [0, 1, 0], [1, 0, 1]], dtype=bool)


def _alignment_reference(tau_sv: float, tau_pd: float, lambda_pd: float) -> tuple[float, float, float]:
    """L_SV (Eq. 5), L_PD (Eq. 6) and L_GA (Eq. 7) by numpy's SVD of each patient's observed columns."""
    sv, q = [], []
    for u, present in zip(ALIGN_U, ALIGN_PRESENT, strict=True):
        if present.sum() < 2:
            continue
        cols = u[present].T  # (d, k): U = [u^(m)] over the observed modalities only
        left, sigma, _ = np.linalg.svd(cols, full_matrices=False)
        sv.append(_logsumexp(list(sigma / tau_sv)) - sigma[0] / tau_sv)
        q1 = left[:, 0]
        q.append(q1 if q1 @ cols.sum(axis=1) >= 0 else -q1)  # sign: along the sum of the columns
    q = np.array(q)
    logits = q @ q.T / tau_pd
    pd = float(np.mean([_logsumexp(list(row)) - row[i] for i, row in enumerate(logits)]))
    l_sv = float(np.mean(sv))
    return l_sv, pd, l_sv + lambda_pd * pd


def test_global_alignment_matches_numpy_svd():
    # tau_sv != tau_pd and lambda != 1: swapping the temperatures or dropping one changes the value
    cfg = dict(tau_sv=0.1, tau_pd=0.5, lambda_pd=0.3)
    l_sv, l_pd, l_ga = _alignment_reference(**cfg)
    assert (l_sv, l_pd, l_ga) == pytest.approx((0.00083769090, 0.49071526484, 0.14805227035), abs=1e-9)
    u = torch.tensor(ALIGN_U, dtype=torch.float64)
    terms = global_alignment_loss(u, torch.tensor(ALIGN_PRESENT), **cfg)
    assert terms.n_patients == 4
    # float64: measured |diff| <= 1.2e-16
    assert terms.sv.item() == pytest.approx(l_sv, abs=1e-10)
    assert terms.pd.item() == pytest.approx(l_pd, abs=1e-10)
    assert terms.loss.item() == pytest.approx(l_ga, abs=1e-10)
    # float32 (training): measured |diff| 1.1e-7
    terms32 = global_alignment_loss(u.float(), torch.tensor(ALIGN_PRESENT), **cfg)
    assert terms32.loss.item() == pytest.approx(l_ga, abs=1e-6)


def test_alignment_without_observed_pairs_is_zero():
    u = torch.tensor(ALIGN_U[3:4], dtype=torch.float64)
    terms = global_alignment_loss(u, torch.tensor(ALIGN_PRESENT[3:4]), tau_sv=0.1, tau_pd=0.5, lambda_pd=0.3)
    assert terms.n_patients == 0 and terms.loss.item() == 0.0


def test_alignment_without_a_contributing_patient_returns_zero_parts():
    u = torch.tensor(ALIGN_U[3:4], dtype=torch.float64, requires_grad=True)
    for terms in (
        global_alignment_loss(u, torch.tensor(ALIGN_PRESENT[3:4]), tau_sv=0.1, tau_pd=0.5, lambda_pd=0.3),
        clip_alignment_loss(u, torch.tensor(ALIGN_PRESENT[3:4]), tau=0.07),
    ):
        assert terms.n_patients == 0
        for part in (terms.loss, terms.sv, terms.pd):
            assert isinstance(part, torch.Tensor) and part.item() == 0.0
        terms.loss.backward()  # a graph, so a trainer can call backward on an empty batch


def test_direction_loss_with_one_and_two_patients():
    q = torch.tensor(_unit_rows(np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])))
    # one patient: no negatives, no term (exactly 0, finite)
    assert direction_loss(q[:1], 0.5).item() == 0.0
    # two patients: InfoNCE, by hand: cos = 0.6 between them
    expected = math.log(math.exp(1 / 0.5) + math.exp(0.6 / 0.5)) - 1 / 0.5
    assert direction_loss(q, 0.5).item() == pytest.approx(expected, abs=1e-12)


def test_dominant_direction_when_the_columns_sum_to_zero():
    # u and -u: the sum of the columns is 0, so the sign rule has nothing to align to; q1 is still +-u
    u = _unit_rows(np.array([0.3, -0.5, 0.8]))
    cols = torch.tensor(np.stack([u, -u]))[None]
    q1 = dominant_direction(cols)
    assert abs(float(q1[0] @ torch.tensor(u))) == pytest.approx(1.0, abs=1e-12)


def test_observed_groups_list_each_rows_slots_in_slot_order():
    present = torch.tensor(
        [
            [0, 1, 0, 1, 1, 0, 0],
            [1, 0, 0, 0, 0, 0, 1],
            [0, 0, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 1, 1, 1],
            [0, 0, 0, 0, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    groups = observed_groups(present)
    assert sorted(groups) == [2, 3, 7]  # the one-slot row is left out
    assert groups[3][0].tolist() == [0, 4] and groups[3][1].tolist() == [[1, 3, 4], [4, 5, 6]]
    assert groups[2][0].tolist() == [1] and groups[2][1].tolist() == [[0, 6]]
    assert groups[7][1].tolist() == [list(range(7))]


def _clip_reference(u: np.ndarray, present: np.ndarray, tau: float, anchor: int = 0) -> tuple[float, int]:
    """Symmetric InfoNCE between each slot and the anchor over the patients having both; mean over slots."""
    terms, contributors = [], np.zeros(len(u), dtype=bool)
    for m in range(u.shape[1]):
        both = present[:, m] & present[:, anchor]
        if m == anchor or both.sum() < 2:
            continue
        logits = u[both, anchor] @ u[both, m].T / tau
        rows = np.mean([_logsumexp(list(r)) - r[i] for i, r in enumerate(logits)])
        cols = np.mean([_logsumexp(list(c)) - c[i] for i, c in enumerate(logits.T)])
        terms.append(0.5 * (rows + cols))
        contributors |= both
    return float(np.mean(terms)), int(contributors.sum())


def test_clip_alignment_matches_the_symmetric_infonce():
    u = _unit_rows(np.random.default_rng(5).normal(size=(4, 4, 3)))
    present = np.array(
        [
            [1, 1, 0, 0],  # slot 1: two pairs (patients 0, 1)
            [1, 1, 0, 1],
            [1, 0, 1, 1],  # slot 2: one pair only (no term); slot 3: patients 1, 2
            [0, 1, 1, 1],  # no anchor: contributes nothing
        ],
        dtype=bool,
    )
    expected, n = _clip_reference(u, present, tau=0.07)
    assert n == 3
    terms = clip_alignment_loss(torch.tensor(u), torch.tensor(present), tau=0.07)  # anchor: slot 0 (WSI)
    assert terms.loss.item() == pytest.approx(expected, abs=1e-10)  # float64: measured |diff| ~ 1e-15
    assert terms.pd.item() == pytest.approx(expected, abs=1e-10) and terms.sv.item() == 0.0
    assert terms.n_patients == 3
    other, n_other = _clip_reference(u, present, tau=0.07, anchor=1)
    assert clip_alignment_loss(torch.tensor(u), torch.tensor(present), tau=0.07, anchor=1).loss.item() == (
        pytest.approx(other, abs=1e-10)
    )


def test_alignment_loss_dispatches_on_align_with_the_config_values():
    u = torch.tensor(ALIGN_U, dtype=torch.float64)
    present = torch.tensor(ALIGN_PRESENT)
    cfg = settings("stage2", tau_sv=0.1, tau_pd=0.5, lambda_pd=0.3, tau_clip=0.2)
    ga = alignment_loss(u, present, "ga", cfg)
    assert ga.loss.item() == pytest.approx(_alignment_reference(0.1, 0.5, 0.3)[2], abs=1e-10)
    clip = alignment_loss(u, present, "clip", cfg)
    assert clip.loss.item() == pytest.approx(_clip_reference(ALIGN_U, ALIGN_PRESENT, 0.2)[0], abs=1e-10)
    with pytest.raises(ValueError, match="align must be one of ga, clip, got 'svd'"):
        alignment_loss(u, present, "svd", cfg)


# ---------------------------------------------------------------------------------------------
# Stage 3 fusion loss with MoFe, Eq. 10-11
# ---------------------------------------------------------------------------------------------
FUSION_U = np.array(
    [
        [[0.6, -0.8], [1.0, 0.0], [0.0, 1.0]],
        [[0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]],
        [[0.8, 0.6], [-0.6, 0.8], [0.0, -1.0]],
        [[1.0, 0.0], [0.8, -0.6], [0.6, 0.8]],
        [[-0.8, 0.6], [0.0, 1.0], [1.0, 0.0]],
    ]
)
FUSION_MASK = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1], [1, 1, 1]], dtype=bool)
# the reduced sets, fixed for the test (drawing them is tested in test_fusion.py)
FUSION_REDUCED = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 0, 1]], dtype=bool)
FUSION_HAS = np.array([True, False, True, True, True])
rng = np.random.default_rng(3)
W1 = rng.normal(size=(4, 3 * 2 + 3))
B1 = rng.normal(size=4)
W2 = rng.normal(size=(1, 4))
B2 = rng.normal(size=1)
del rng


def _head_reference(u: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Eq. 8-9: concat(slots x mask, mask) -> Linear -> ReLU -> Linear."""
    m = mask.astype(float)
    h = np.concatenate([(u * m[:, :, None]).reshape(len(u), -1), m], axis=1)
    return (np.maximum(h @ W1.T + B1, 0) @ W2.T + B2)[:, 0]


def _head() -> FusionHead:
    head = FusionHead(3, 2, 4, 0.0).double().eval()
    with torch.no_grad():
        head.net[0].weight.copy_(torch.tensor(W1))
        head.net[0].bias.copy_(torch.tensor(B1))
        head.net[3].weight.copy_(torch.tensor(W2))
        head.net[3].bias.copy_(torch.tensor(B2))
    return head


@pytest.fixture()
def fixed_reduced(monkeypatch):
    def draw(present, generator=None):
        assert torch.equal(present, torch.tensor(FUSION_MASK))
        return torch.tensor(FUSION_REDUCED), torch.tensor(FUSION_HAS)

    monkeypatch.setattr(fusion_model, "draw_reduced", draw)


def test_fusion_loss_bce_with_mofe_matches_eq_10_11(fixed_reduced):
    label = [0.0, 1.0, 0.0, 1.0, 1.0]
    full = _head_reference(FUSION_U, FUSION_MASK)
    part = _head_reference(FUSION_U, FUSION_REDUCED)
    l_full = np.array([_bce(z, y) for z, y in zip(full, label, strict=True)])
    l_red = np.array([_bce(z, y) for z, y in zip(part, label, strict=True)])[FUSION_HAS]
    gap = l_full[FUSION_HAS] - l_red
    assert (gap > 0).any() and (gap < 0).any()  # the example exercises both sides of the hinge
    mofe = np.maximum(gap, 0).mean()  # Eq. 10: penalise a full set that does worse than its reduced set
    expected = l_full.mean() + l_red.mean() + 0.25 * mofe  # Eq. 11
    assert expected == pytest.approx(2.6442504236, abs=1e-9)
    target = {k: torch.tensor(label, dtype=torch.float64) for k in ("label", "time", "event")}
    loss, parts = fusion_loss(
        _head(),
        torch.tensor(FUSION_U),
        torch.tensor(FUSION_MASK),
        target,
        kind="bce",
        drop=True,
        lambda_mofe=0.25,
    )
    # float64: measured |diff| <= 4.5e-16
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert parts["task"] == pytest.approx(l_full.mean(), abs=1e-12)
    assert parts["reduced"] == pytest.approx(l_red.mean(), abs=1e-12)
    assert parts["mofe"] == pytest.approx(mofe, abs=1e-12)


@pytest.mark.parametrize(
    "time, event, hinge",
    [
        ([3.0, 1.0, 5.0, 2.0, 4.0], [1, 1, 0, 1, 1], "above 1"),
        ([5.0, 4.0, 3.0, 2.0, 1.0], [0, 1, 1, 1, 1], "in (0, 1)"),
        ([4.0, 3.0, 2.0, 1.0, 5.0], [1, 1, 1, 1, 1], "inactive"),
    ],
)
def test_fusion_loss_cox_with_mofe_matches_eq_10_11(fixed_reduced, time, event, hinge):
    full = _head_reference(FUSION_U, FUSION_MASK)
    part = _head_reference(FUSION_U, FUSION_REDUCED)
    rows = np.flatnonzero(FUSION_HAS)
    sub_t, sub_e = [time[i] for i in rows], [event[i] for i in rows]
    l_full = _cox_reference(list(full), time, event, "breslow")
    l_red = _cox_reference(list(part[rows]), sub_t, sub_e, "breslow")
    # Eq. 10 for a set loss: both partial likelihoods over the patients that have a reduced set
    gap = _cox_reference(list(full[rows]), sub_t, sub_e, "breslow") - l_red
    mofe = max(gap, 0.0)
    expected = l_full + l_red + 0.25 * mofe
    assert {"above 1": gap > 1, "in (0, 1)": 0 < gap < 1, "inactive": gap < 0}[hinge]
    target = {
        "label": torch.zeros(5, dtype=torch.float64),
        "time": torch.tensor(time, dtype=torch.float64),
        "event": torch.tensor(event, dtype=torch.float64),
    }
    loss, parts = fusion_loss(
        _head(),
        torch.tensor(FUSION_U),
        torch.tensor(FUSION_MASK),
        target,
        kind="cox",
        drop=True,
        lambda_mofe=0.25,
    )
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert parts["mofe"] == pytest.approx(mofe, abs=1e-12)
    assert parts["reduced"] == pytest.approx(l_red, abs=1e-12)


def test_fusion_loss_with_drop_but_no_reduced_set_is_the_plain_task_loss():
    # every patient has one modality: nothing to drop, the loss is l(y+) alone
    mask = np.zeros((3, 3), dtype=bool)
    mask[[0, 1, 2], [0, 2, 1]] = True
    label = [1.0, 0.0, 1.0]
    full = _head_reference(FUSION_U[:3], mask)
    expected = np.mean([_bce(z, y) for z, y in zip(full, label, strict=True)])
    for kind, target in (
        ("bce", {"label": torch.tensor(label, dtype=torch.float64)}),
        ("cox", {"time": torch.tensor([2.0, 1.0, 3.0]), "event": torch.tensor([1, 1, 0])}),
    ):
        loss, parts = fusion_loss(
            _head(),
            torch.tensor(FUSION_U[:3]),
            torch.tensor(mask),
            target,
            kind=kind,
            drop=True,
            lambda_mofe=0.25,
        )
        want = (
            expected if kind == "bce" else _cox_reference(list(full), [2.0, 1.0, 3.0], [1, 1, 0], "breslow")
        )
        assert loss.item() == pytest.approx(want, abs=1e-12)
        assert parts == {"task": pytest.approx(want, abs=1e-12), "reduced": 0.0, "mofe": 0.0}
    with pytest.raises(ValueError, match="task_loss must be bce or cox, got 'mse'"):
        fusion_loss(
            _head(), torch.tensor(FUSION_U[:3]), torch.tensor(mask), {}, kind="mse", drop=False, lambda_mofe=0
        )


def test_fusion_model_forward_spec_and_rebuild():
    from haf.alignment.projectors import ProjectorBank
    from haf.fusion.model import FusionModel, build_model, model_spec

    torch.manual_seed(0)
    bank = ProjectorBank({"wsi": 4, "clin": 3}, ["wsi", "clin"], hidden=5, d_out=2)
    model = FusionModel(bank, hidden=6, dropout=0.3, slot_index=[0, 3]).eval()
    x = {"wsi": torch.randn(4, 4), "clin": torch.randn(4, 3)}
    present7 = torch.zeros(4, 7, dtype=torch.bool)
    present7[:, 0] = torch.tensor([1, 0, 1, 1], dtype=torch.bool)
    present7[:, 3] = torch.tensor([1, 1, 0, 1], dtype=torch.bool)
    present7[:, 5] = True  # a slot this method does not use
    mask = present7[:, [0, 3]]
    assert torch.equal(model.slots(present7), mask)
    expected = model.head(bank(x, mask), mask)
    assert torch.equal(model(x, present7), expected) and torch.equal(model.embed(x, mask), bank(x, mask))
    spec = model_spec(model)
    assert spec["hidden"] == 6 and spec["dropout"] == 0.3 and spec["slot_index"] == [0, 3]
    assert spec["projectors"] == bank.spec()
    rebuilt = build_model(spec).eval()
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt(x, present7), expected)
    assert rebuilt.slot_index == [0, 3] and rebuilt.head.net[2].p == 0.3


def test_fusion_loss_without_drop_is_the_plain_task_loss():
    label = [1.0, 0.0, 0.0, 1.0, 1.0]
    full = _head_reference(FUSION_U, FUSION_MASK)
    expected = np.mean([_bce(z, y) for z, y in zip(full, label, strict=True)])
    loss, parts = fusion_loss(
        _head(),
        torch.tensor(FUSION_U),
        torch.tensor(FUSION_MASK),
        {"label": torch.tensor(label, dtype=torch.float64)},
        kind="bce",
        drop=False,
        lambda_mofe=0.25,
    )
    assert loss.item() == pytest.approx(expected, abs=1e-12) and set(parts) == {"task"}


# ---------------------------------------------------------------------------------------------
# GCS on a quadratic with known curvature
# ---------------------------------------------------------------------------------------------
class _Hazard(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f * self.w


class _QuadraticModel(nn.Module):
    """f_b = x_b * theta, h = w f, L = sum_b 0.5 a_b ||h_b||^2: dL/df_b = a_b w^2 f_b, Hessian a_b w^2 I."""

    modalities = ["wsi", "tma", "cell", "clin"]

    def __init__(self, theta: np.ndarray) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta, dtype=torch.float64))
        self.hazard_net = _Hazard()

    def encode(self, x, present):
        return x * self.theta

    def hazard(self, f):
        return self.hazard_net(f)

    def hazard_parameters(self):
        return self.hazard_net.parameters()

    def cox_loss(self, h, a):
        return 0.5 * (a.unsqueeze(1) * h**2).sum()

    def loss(self, x, present, a):
        return self.cox_loss(self.hazard(self.encode(x, present)), a)


GCS_X = np.array([[1.0, -2.0, 0.5], [0.3, 0.4, -1.0], [2.0, 1.0, 1.0], [-0.5, 0.0, 2.0]])
GCS_A = np.array([0.2, 4.0, 1.0, 10.0])  # per-sample curvature of the quadratic (c = 3a: one below 1)
GCS_THETA = np.array([0.8, -0.6, 1.2])
GCS_PRESENT = np.zeros((4, 7), dtype=bool)
GCS_PRESENT[:, :4] = [[1, 1, 1, 1], [1, 0, 1, 1], [1, 0, 0, 1], [1, 1, 1, 0]]


def _gcs_reference(theta, w, gamma, missing_weight):
    """Algorithm 2 on the quadratic, by hand: encoder and hazard gradients of one steered step."""
    d = GCS_X.shape[1]
    f = GCS_X * theta
    g = GCS_A[:, None] * w**2 * f  # dL/df
    c = GCS_A * w**2 * d  # r^T (a w^2 I) r = a w^2 d for every Rademacher r
    s = c * np.linalg.norm(g, axis=1)
    z = (s - s.mean()) / s.std()  # population standard deviation
    missing = 1 - GCS_PRESENT[:, :4].mean(axis=1)
    omega = 1 / (1 + np.exp(-(z + missing_weight * missing)))
    g_steered = ((1 - omega) + omega / (1 + gamma * c))[:, None] * g
    grad_theta = (g_steered * GCS_X).sum(axis=0)
    grad_w = float((GCS_A[:, None] * w * f**2).sum())
    return grad_theta, grad_w


def _gcs_step(cfg: GCSConfig, lr: float = 0.1):
    model = _QuadraticModel(GCS_THETA)
    step = GCSStep(model, torch.optim.SGD(model.parameters(), lr=lr), cfg, seed=0)
    loss = step(torch.tensor(GCS_X), torch.tensor(GCS_PRESENT), torch.tensor(GCS_A))
    model.step, model.reported_loss = step, loss
    return model


def test_gcs_step_on_a_quadratic_with_known_curvature():
    gamma, mw = 0.5, 2.0
    grad_theta, grad_w = _gcs_reference(GCS_THETA, 1.0, gamma, mw)
    model = _gcs_step(GCSConfig(enabled=True, rho=0.0, gamma=gamma, epsilon=0.01, missing_weight=mw))
    f = GCS_X * GCS_THETA
    assert model.reported_loss == pytest.approx(0.5 * float((GCS_A[:, None] * f**2).sum()), abs=1e-12)
    # the epoch log: means of c, omega and the damping factor (1 - omega) + omega / (1 + gamma c)
    c = GCS_A * 3.0
    g = GCS_A[:, None] * f
    s = c * np.linalg.norm(g, axis=1)
    omega = 1 / (1 + np.exp(-((s - s.mean()) / s.std() + mw * (1 - GCS_PRESENT[:, :4].mean(axis=1)))))
    stats = model.step.stats.reset()
    assert stats["curvature"] == pytest.approx(c.mean(), abs=1e-9)
    assert stats["omega"] == pytest.approx(omega.mean(), abs=1e-12)
    assert stats["damping"] == pytest.approx(((1 - omega) + omega / (1 + gamma * c)).mean(), abs=1e-12)
    assert model.step.stats.history == [stats] and model.step.stats.steps == 0
    # float64, finite differences exact on a quadratic: measured |diff| <= 1.7e-15
    np.testing.assert_allclose(model.theta.detach().numpy(), GCS_THETA - 0.1 * grad_theta, atol=1e-12)
    assert model.hazard_net.w.item() == pytest.approx(1.0 - 0.1 * grad_w, abs=1e-12)
    # the steering is not the identity in this example: without it the step differs
    plain_theta, _ = _gcs_reference(GCS_THETA, 1.0, 0.0, mw)
    assert np.abs(plain_theta - grad_theta).max() > 1e-2


def test_gcs_step_with_sam_steers_at_the_perturbed_point():
    gamma, mw, rho = 0.5, 2.0, 0.05
    f = GCS_X * GCS_THETA
    g_theta = (GCS_A[:, None] * f * GCS_X).sum(axis=0)  # plain gradients at (theta, w = 1)
    g_w = float((GCS_A[:, None] * f**2).sum())
    norm = math.sqrt(float((g_theta**2).sum()) + g_w**2)
    theta_p, w_p = GCS_THETA + rho * g_theta / norm, 1.0 + rho * g_w / norm
    grad_theta, grad_w = _gcs_reference(theta_p, w_p, gamma, mw)
    model = _gcs_step(GCSConfig(enabled=True, rho=rho, gamma=gamma, epsilon=0.01, missing_weight=mw))
    # the reported loss is the one at the unperturbed point
    assert model.reported_loss == pytest.approx(0.5 * float((GCS_A[:, None] * f**2).sum()), abs=1e-12)
    # measured |diff| ~ 1e-15: the step applies the perturbed point's gradients to the restored theta
    np.testing.assert_allclose(model.theta.detach().numpy(), GCS_THETA - 0.1 * grad_theta, atol=1e-12)
    assert model.hazard_net.w.item() == pytest.approx(1.0 - 0.1 * grad_w, abs=1e-12)


class _CoupledModel(_QuadraticModel):
    """L = sum_b 0.5 a_b h_b^T M h_b with a non-diagonal M: the curvature estimate r^T M r depends on r."""

    M = torch.tensor([[2.0, 0.9, -0.4], [0.9, 1.0, 0.3], [-0.4, 0.3, 1.5]], dtype=torch.float64)

    def __init__(self, theta) -> None:
        super().__init__(theta)
        self.spare = nn.Parameter(torch.ones(2, dtype=torch.float64))  # never used by the loss

    def cox_loss(self, h, a):
        return 0.5 * (a * torch.einsum("bi,ij,bj->b", h, self.M, h)).sum()


class _IgnoringModel(_QuadraticModel):
    """A hazard that ignores the fused features: no gradient reaches the encoder."""

    def hazard(self, f):
        return self.hazard_net.w.expand(f.shape[0], f.shape[1])


def _run(model_cls, cfg, seed=0, opt=None, steps=1):
    model = model_cls(GCS_THETA)
    optimizer = opt(model.parameters()) if opt else torch.optim.SGD(model.parameters(), lr=0.1)
    step = GCSStep(model, optimizer, cfg, seed=seed)
    for _ in range(steps):
        step(torch.tensor(GCS_X), torch.tensor(GCS_PRESENT), torch.tensor(GCS_A))
    return model, step


def test_gcs_probes_come_from_the_steps_own_seeded_generator():
    cfg = GCSConfig(enabled=True, rho=0.0, gamma=0.5, epsilon=0.01, missing_weight=1.0)
    torch.manual_seed(1)
    a, step = _run(_CoupledModel, cfg, steps=2)
    assert (
        GCSStep(a, torch.optim.SGD(a.parameters(), lr=0.1), cfg).generator.initial_seed() == 0
    )  # default seed
    torch.manual_seed(2)  # the global RNG must not matter
    b, _ = _run(_CoupledModel, cfg, steps=2)
    c, _ = _run(_CoupledModel, cfg, seed=1, steps=2)
    assert torch.equal(a.theta, b.theta) and not torch.equal(a.theta, c.theta)
    g = torch.Generator().manual_seed(3)
    like = torch.zeros(4, 5, dtype=torch.float64)
    expected = torch.randint(0, 2, (4, 5), generator=torch.Generator().manual_seed(3)) * 2 - 1
    assert torch.equal(rademacher(like, g), expected.double())


def test_gcs_step_without_gradient_to_the_encoder():
    cfg = GCSConfig(enabled=True, rho=0.05, gamma=0.5, epsilon=0.01, missing_weight=1.0)
    model, step = _run(_IgnoringModel, cfg)
    np.testing.assert_array_equal(model.theta.detach().numpy(), GCS_THETA)  # nothing reached theta
    # the hazard still learns: L = 0.5 sum_b a_b d w^2, dL/dw = sum_b a_b d w (at the SAM point w + rho)
    assert model.hazard_net.w.item() == pytest.approx(1.0 - 0.1 * GCS_A.sum() * 3 * 1.05, abs=1e-12)
    assert step.stats.reset()["curvature"] == 0.0


def test_gcs_leaves_parameters_without_gradient_alone():
    # AdamW with weight decay: a parameter that gets no gradient must not be decayed (grads set to None)
    cfg = GCSConfig(enabled=True, rho=0.05, gamma=0.5, epsilon=0.01, missing_weight=1.0)
    model, _ = _run(_CoupledModel, cfg, opt=lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.5))
    assert torch.equal(model.spare.detach(), torch.ones(2, dtype=torch.float64))
    assert not np.array_equal(model.theta.detach().numpy(), GCS_THETA)


def test_gcs_steered_backward_accumulates_like_backward():
    cfg = GCSConfig(enabled=True, rho=0.0, gamma=0.5, epsilon=0.01, missing_weight=2.0)
    model = _QuadraticModel(GCS_THETA)
    step = GCSStep(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg)
    args = (torch.tensor(GCS_X), torch.tensor(GCS_PRESENT), torch.tensor(GCS_A))
    step.steered_backward(*args)
    once = (model.theta.grad.clone(), model.hazard_net.w.grad.clone())
    step.steered_backward(*args)
    torch.testing.assert_close(model.theta.grad, 2 * once[0])
    torch.testing.assert_close(model.hazard_net.w.grad, 2 * once[1])


def test_gcs_stats_average_over_the_steps_of_an_epoch():
    stats = GCSStats()
    stats.add(torch.tensor([1.0, 3.0]), torch.tensor([0.5, 0.5]), gamma=1.0)
    stats.add(torch.tensor([0.0, 0.0]), torch.tensor([0.2, 0.4]), gamma=1.0)
    # damping (1 - w) + w / (1 + c): step 1 (0.75 + 0.625) / 2, step 2: 1
    out = stats.reset()
    assert out == pytest.approx({"curvature": 1.0, "omega": 0.4, "damping": (0.6875 + 1.0) / 2})
    assert stats.steps == 0 and stats.reset() == {"curvature": 0.0, "omega": 0.0, "damping": 0.0}
    assert stats.history == [out, {"curvature": 0.0, "omega": 0.0, "damping": 0.0}]


def test_gcs_controller_and_sam_edge_cases():
    # one sample: nothing to standardise against
    torch.testing.assert_close(controller(torch.tensor([5.0]), torch.tensor([2.0]), torch.tensor([0.5]), 1.0),
                               torch.sigmoid(torch.tensor([0.5])))  # fmt: skip
    # two samples with a spread below 1: still standardised (z = -1, +1)
    omega = controller(torch.tensor([0.1, 0.3]), torch.ones(2), torch.zeros(2), 1.0)
    torch.testing.assert_close(omega, torch.sigmoid(torch.tensor([-1.0, 1.0])))
    assert sam_perturbation([None, None], 0.05) == [None, None]
    grads = [torch.tensor([3.0, 4.0])]
    assert sam_perturbation(grads, 0.0) == [None]
    torch.testing.assert_close(sam_perturbation(grads, 1.0)[0], torch.tensor([0.6, 0.8]))


class _SometimesModel(_QuadraticModel):
    """``extra`` enters the features only when some patient has slot 4 (a modality missing from a batch)."""

    def __init__(self, theta) -> None:
        super().__init__(theta)
        self.extra = nn.Parameter(torch.tensor([0.5, -0.5, 0.2], dtype=torch.float64))

    def encode(self, x, present):
        f = x * self.theta
        return f + self.extra * present[:, 4:5].to(f.dtype) if bool(present[:, 4].any()) else f


def test_gcs_parameter_absent_from_a_batch_is_not_moved_by_adamw():
    # step 1 uses `extra`, step 2 does not: its gradient must be None (not a stale zero) so that AdamW
    # neither decays it nor moves it along its running moments
    cfg = GCSConfig(enabled=True, rho=0.0, gamma=0.5, epsilon=0.01, missing_weight=1.0)
    model = _SometimesModel(GCS_THETA)
    step = GCSStep(model, torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5), cfg)
    with_slot = torch.tensor(GCS_PRESENT)
    with_slot[:, 4] = True
    step(torch.tensor(GCS_X), with_slot, torch.tensor(GCS_A))
    after_first = model.extra.detach().clone()
    assert not torch.equal(after_first, torch.tensor([0.5, -0.5, 0.2], dtype=torch.float64))
    step(torch.tensor(GCS_X), torch.tensor(GCS_PRESENT), torch.tensor(GCS_A))
    assert model.extra.grad is None and torch.equal(model.extra.detach(), after_first)
