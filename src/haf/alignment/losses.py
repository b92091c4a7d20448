"""Stage 2 alignment losses: SVD global alignment (Eq. 5-7 of the HAF paper) and the CLIP baseline.

Every loss works on ``u`` of shape (B, M, d): the L2-normalised projections of M modality slots,
with a presence mask (B, M).  The per-patient matrix of the paper, ``U = [u^(m)]`` over the
modalities *that patient has*, is never padded with zero columns: patients are grouped by their
number of observed modalities k and each group's (n_k, d, k) matrices go through one batched
``torch.linalg.svdvals`` call (at most M - 1 calls per batch, no per-patient Python loop).

Numerical traps handled here (SPEC section 6):

* singular values come from ``torch.linalg.svdvals``, whose gradient ``U diag(g) V^T`` is finite
  even at rank 1 and with repeated singular values;
* the dominant direction is ``q1 = normalise(U v1)`` with ``v1`` (the top right singular vector)
  computed without gradient from the k x k Gram matrix, so no ``1 / (sigma_i^2 - sigma_j^2)``
  term of the SVD backward ever appears; ``||U v1|| = sigma_1 >= 1`` for unit columns, so the
  normalisation is safe;
* ``q1`` is sign-aligned to the sum of the patient's columns (its SVD sign is arbitrary).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from haf.settings import Stage2Settings


@dataclass
class AlignmentTerms:
    """One batch's alignment loss and its parts (for logging)."""

    loss: torch.Tensor
    sv: torch.Tensor
    pd: torch.Tensor
    n_patients: int  # patients that contributed (two or more modalities)


def observed_groups(present: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Group rows by their number k >= 2 of observed slots.

    Returns ``k -> (rows (n_k,), slots (n_k, k))`` where ``slots`` lists each row's observed slots
    in slot order.  Rows with fewer than two observed slots are left out (no alignment term).
    """
    present = present.bool()
    counts = present.sum(dim=1)
    # observed slots first, each in slot order (stable sort of "is absent")
    order = torch.argsort((~present).to(torch.int8), dim=1, stable=True)
    groups: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for k in torch.unique(counts).tolist():
        if k < 2:
            continue
        rows = torch.nonzero(counts == k, as_tuple=False).reshape(-1)
        groups[int(k)] = (rows, order[rows, :k])
    return groups


@torch.no_grad()
def top_right_singular_vector(cols: torch.Tensor) -> torch.Tensor:
    """v1 of each (k, d) column stack ``cols`` (batched: (n, k, d) -> (n, k)), without gradient.

    Taken as the top eigenvector of the k x k Gram matrix ``cols cols^T`` (= U^T U), computed in
    float64 for accuracy; with tied top singular values any unit vector of the top eigenspace is
    returned, which is all the stable q1 needs.
    """
    gram = (cols @ cols.transpose(-1, -2)).double()
    _, vecs = torch.linalg.eigh(gram)
    return vecs[..., -1].to(cols.dtype)


def dominant_direction(cols: torch.Tensor, v1: torch.Tensor | None = None) -> torch.Tensor:
    """Sign-aligned dominant left singular vector q1 of each patient's U (cols: (n, k, d) -> (n, d)).

    ``q1 = normalise(U v1)`` with ``v1`` detached; the sign is chosen so that q1 points along the
    sum of the patient's columns (``q1 . sum_m u^(m) >= 0``), which makes q1 independent of the
    arbitrary sign the decomposition returns.

    With v1 detached, L_PD's backward is a surrogate of the exact gradient (which is unbounded at rank 1
    and at tied singular values). Measured by ``bench/bench_lpd_gradient.py`` (64 patients, 7 unit
    columns of 128-d, tau 0.1): cosine to the exact gradient 0.85 on average (min 0.70) for unaligned
    columns, 0.995 at moderate alignment and 1.000 when nearly aligned; where the two differ most,
    L_PD's share of L_GA's gradient at lambda_PD = 0.01 is below 0.1 %.
    """
    if v1 is None:
        v1 = top_right_singular_vector(cols)
    v1 = v1.detach()
    q = torch.einsum("nk,nkd->nd", v1, cols)  # U v1 = sigma_1 q1 (up to sign)
    with torch.no_grad():
        sign = torch.sign((q * cols.sum(dim=1)).sum(dim=1))
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return F.normalize(q * sign.unsqueeze(1), dim=1)


def singular_value_loss(sigma: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 5 per patient: cross-entropy of sigma / tau selecting sigma_1 (sigma: (n, k), descending)."""
    logits = sigma / tau
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


def direction_loss(q1: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 6: InfoNCE over the batch on the (sign-aligned) dominant directions q1 (n, d)."""
    n = q1.shape[0]
    if n < 2:
        return q1.sum() * 0.0
    logits = q1 @ q1.T / tau
    return F.cross_entropy(logits, torch.arange(n, device=q1.device))


def global_alignment_loss(
    u: torch.Tensor,
    present: torch.Tensor,
    *,
    tau_sv: float,
    tau_pd: float,
    lambda_pd: float,
) -> AlignmentTerms:
    """L_GA = L_SV + lambda_PD L_PD (Eq. 7) over the patients with two or more observed slots.

    ``u``: (B, M, d), L2-normalised per slot; absent slots are ignored (never used as columns).
    A batch without such a patient gives a zero loss with a graph (training simply skips it).
    """
    sv_terms = []
    q1s = []
    for _, (rows, slots) in observed_groups(present).items():
        cols = u[rows.unsqueeze(1), slots]  # (n_k, k, d): the patient's observed columns
        sigma = torch.linalg.svdvals(cols.transpose(1, 2))  # (n_k, k), descending
        sv_terms.append(singular_value_loss(sigma, tau_sv))
        q1s.append(dominant_direction(cols))
    if not sv_terms:
        zero = u.sum() * 0.0
        return AlignmentTerms(zero, zero, zero, 0)
    sv = torch.cat(sv_terms)
    q1 = torch.cat(q1s)
    l_sv = sv.mean()
    l_pd = direction_loss(q1, tau_pd)
    return AlignmentTerms(l_sv + lambda_pd * l_pd, l_sv, l_pd, int(sv.shape[0]))


def clip_alignment_loss(
    u: torch.Tensor, present: torch.Tensor, *, tau: float, anchor: int = 0
) -> AlignmentTerms:
    """Symmetric InfoNCE between each non-anchor slot and the anchor slot (WSI) of the same patients.

    For slot m, the patients of the batch that have both m and the anchor form the pairs; a slot
    with fewer than two such patients adds no term, and patients without the anchor add nothing.
    The loss is the mean over the slots that contributed.
    """
    present = present.bool()
    terms = []
    contributors = torch.zeros(present.shape[0], dtype=torch.bool, device=present.device)
    for m in range(u.shape[1]):
        if m == anchor:
            continue
        both = present[:, m] & present[:, anchor]
        n = int(both.sum())
        if n < 2:
            continue
        a = u[both, anchor]
        b = u[both, m]
        logits = a @ b.T / tau
        target = torch.arange(n, device=u.device)
        terms.append(0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)))
        contributors |= both
    if not terms:
        zero = u.sum() * 0.0
        return AlignmentTerms(zero, zero, zero, 0)
    loss = torch.stack(terms).mean()
    zero = loss.detach() * 0.0
    return AlignmentTerms(loss, zero, loss.detach(), int(contributors.sum()))


def _ga(u: torch.Tensor, present: torch.Tensor, s: Stage2Settings) -> AlignmentTerms:
    terms = global_alignment_loss(u, present, tau_sv=s.tau_sv, tau_pd=s.tau_pd, lambda_pd=s.lambda_pd)
    # L_GA = lambda_sv L_SV + lambda_pd L_PD (lambda_sv = 1: Eq. 7; the authors' code weighs L_SV 0.1)
    return replace(terms, loss=s.lambda_sv * terms.sv + s.lambda_pd * terms.pd)


def _clip(u: torch.Tensor, present: torch.Tensor, s: Stage2Settings) -> AlignmentTerms:
    return clip_alignment_loss(u, present, tau=s.tau_clip)


ALIGNMENTS: dict[str, Callable[[torch.Tensor, torch.Tensor, Stage2Settings], AlignmentTerms]] = {
    "ga": _ga,  # HAF's global alignment, Eq. 5-7
    "clip": _clip,  # contrastive alignment anchored to WSI
}
"""The alignment registry: a method's ``align`` (other than ``none``) names one of these.

Adding an alignment means one entry here, its name in the schema's ``align`` enum, and a test."""


def alignment_loss(
    u: torch.Tensor, present: torch.Tensor, align: str, settings: Stage2Settings
) -> AlignmentTerms:
    """The ``align`` loss of the registry on unit projections ``u`` (B, 7, d) with the ``stage2`` settings."""
    try:
        loss = ALIGNMENTS[align]
    except KeyError:
        raise ValueError(f"align must be one of {', '.join(ALIGNMENTS)}, got {align!r}") from None
    return loss(u, present, settings)
