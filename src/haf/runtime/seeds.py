"""Seeding: every per-fold model takes its seed from :func:`fold_seed`, so the rule lives in one place."""

from __future__ import annotations

import random

import numpy as np


def fold_seed(base: int, fold: int) -> int:
    """The training seed of fold ``fold`` for a stage (or method) whose configured seed is ``base``."""
    return int(base) + 1000 * int(fold)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and (if importable) torch; return a NumPy generator for explicit use."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch
    except ImportError:  # the data rules' env has no torch
        pass
    else:
        torch.manual_seed(seed)
    return np.random.default_rng(seed)
