"""Task losses shared by every trainer: binary cross-entropy on logits and the Cox partial likelihood."""

from __future__ import annotations

import torch
import torch.nn.functional as F

COX_NORMALISATIONS: tuple[str, ...] = ("events", "batch")
"""Divisor of the summed negative log partial likelihood: the batch's events, or its size B (PARACHUTE's
Algorithm 2, line 6: ``-1/B sum_b delta_b (h_b - log sum_{t_j >= t_b} e^{h_j})``)."""


def cox_partial_likelihood(
    risk: torch.Tensor,
    time: torch.Tensor,
    event: torch.Tensor,
    ties: str = "breslow",
    normalise: str = "events",
) -> torch.Tensor:
    """Negative Cox log partial likelihood, averaged over observed events (``normalise="events"``) or over
    the batch (``"batch"``: divided by the number of patients, PARACHUTE's Algorithm 2).

    ``risk`` is the log hazard (higher = earlier death).  Ties in event time are handled by
    Breslow's approximation (every tied event sees the full risk set) or Efron's.  A batch without
    an event has no partial likelihood: the loss is 0 with a gradient graph, so training continues.
    The two normalisations differ by the factor events / B of the batch, which rescales the gradient
    (and so GCS's curvature estimate) batch by batch.
    """
    if normalise not in COX_NORMALISATIONS:
        raise ValueError(f"normalise must be one of {', '.join(COX_NORMALISATIONS)}, got {normalise!r}")
    risk = risk.reshape(-1)
    time = time.reshape(-1).to(risk.dtype)
    event = event.reshape(-1).to(risk.dtype)
    n_events = event.sum()
    if n_events.item() == 0:
        return risk.sum() * 0.0
    divisor = n_events if normalise == "events" else float(risk.numel())
    # at_risk[i, j] = 1 if subject j is still at risk at subject i's time (t_j >= t_i)
    at_risk = (time.unsqueeze(0) >= time.unsqueeze(1)).to(risk.dtype)
    shift = risk.detach().max()
    exp_risk = torch.exp(risk - shift)
    risk_set_sum = at_risk @ exp_risk  # (n,)
    if ties == "breslow":
        log_denominator = torch.log(risk_set_sum) + shift
        return -((risk - log_denominator) * event).sum() / divisor
    if ties != "efron":
        raise ValueError(f"ties must be 'breslow' or 'efron', got {ties!r}")
    # Efron: for d tied events at time t, the l-th (0-based) denominator subtracts l/d of their summed hazard
    tied = (time.unsqueeze(0) == time.unsqueeze(1)).to(risk.dtype) * event.unsqueeze(
        0
    )  # tied[i, j]: j an event tied with i
    tied_sum = tied @ exp_risk  # summed hazard of the events tied at t_i
    d = tied.sum(dim=1).clamp(min=1.0)
    # rank of each event within its tie group (0..d-1), from a stable order
    order = torch.arange(len(risk), device=risk.device, dtype=risk.dtype)
    rank = (tied * (order.unsqueeze(0) < order.unsqueeze(1)).to(risk.dtype)).sum(dim=1)
    denominator = risk_set_sum - rank / d * tied_sum
    log_denominator = torch.log(denominator) + shift
    return -((risk - log_denominator) * event).sum() / divisor


def binary_loss(logit: torch.Tensor, label: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy on logits (numerically stable)."""
    return F.binary_cross_entropy_with_logits(
        logit.reshape(-1), label.reshape(-1).to(logit.dtype), reduction=reduction
    )
