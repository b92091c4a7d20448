"""Epoch selection (config training.selection): which epoch each per-fold model keeps, on hand sequences."""

from __future__ import annotations

import pytest
import torch
from fakes.config import settings

from haf.runtime.fit import EpochSelector

# a noisy validation curve of a small validation part: epoch 1 is a lucky spike, the model improves later
SCORES = [0.50, 0.80, 0.55, 0.60, 0.66, 0.70, 0.72, 0.71, 0.70, 0.69, 0.68, 0.67]
LOSSES = [0.69, 0.68, 0.66, 0.64, 0.62, 0.60, 0.59, 0.60, 0.61, 0.62, 0.63, 0.64]


def _run(selection: str, patience: int = 100, **keys):
    sel = EpochSelector(settings("training", selection=selection, **keys), patience)
    stopped_at = None
    for epoch, (s, v) in enumerate(zip(SCORES, LOSSES, strict=True)):
        if sel.update(epoch, s, v, lambda epoch=epoch: torch.full((3,), float(epoch))) and stopped_at is None:
            stopped_at = epoch
            break
    return sel, stopped_at


def test_best_keeps_the_spike_and_stops_after_patience():
    sel, stopped = _run("best", patience=4)
    assert sel.best_epoch == 1 and stopped == 5  # epochs 2-5 do not beat 0.80
    assert torch.equal(sel.best_state, torch.full((3,), 1.0))


def test_smoothed_selects_on_the_trailing_mean():
    sel, _ = _run("smoothed", smooth_window=3)
    # trailing 3-epoch means (epochs 5-7: 0.7100 is the highest, the spike's window 0.6167)
    means = [
        sum(SCORES[max(0, e - 2) : e + 1]) / len(SCORES[max(0, e - 2) : e + 1]) for e in range(len(SCORES))
    ]
    assert sel.best_epoch == max(range(len(means)), key=lambda e: (means[e], -e))
    assert sel.best_epoch == 7


def test_min_epochs_ignores_early_epochs():
    sel, _ = _run("min_epochs", min_epochs=3)
    assert sel.best_epoch == 6  # the best score from epoch 3 on (0.72)


def test_average_keeps_the_mean_of_the_last_states_ending_at_the_best_epoch():
    sel, _ = _run("min_epochs", min_epochs=3)
    avg, _ = _run("average", average_last=3)
    assert avg.best_epoch == 1  # selection as best: the spike; the weights: mean of epochs 0 and 1
    torch.testing.assert_close(avg.best_state, torch.full((3,), 0.5))
    assert sel.best_epoch != avg.best_epoch


def test_unknown_selection_is_an_error():
    with pytest.raises(ValueError, match="training.selection"):
        EpochSelector(
            settings("training").__class__(**{**settings("training").as_dict(), "selection": "x"}), 3
        )
