"""Device choice and precision: GPU code paths that also run (slowly, in fp32) on a CPU."""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when a GPU is visible, else CPU; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device: cuda was asked for but no GPU is visible (CUDA_VISIBLE_DEVICES?); use device: auto or cpu"
        )
    return torch.device(name)


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op (fp32) on CPU, where bf16 is slower and changes results."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_torch_threads(threads: int) -> None:
    """Match torch's intra-op threads to the rule's ``threads:`` so parallel jobs do not oversubscribe."""
    torch.set_num_threads(max(1, int(threads)))
