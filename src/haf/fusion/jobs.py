"""One rule job of Stage 3 (rule ``fusion``): load, train the declared method, write the four outputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from haf.data.fold_inputs import FoldInputs
from haf.fusion.spec import MethodSpec
from haf.fusion.stage2 import load_projectors
from haf.fusion.trainer import FusionRun, train_fusion
from haf.method_io import write_method_outputs

log = logging.getLogger(__name__)


def train_method(
    name: str,
    declaration: dict[str, Any],
    fold_inputs: str | Path,
    params: dict[str, Any],
    device: torch.device,
    *,
    projectors: str | Path | None = None,
    bags: dict[str, Any] | None = None,
    progress: bool = False,
) -> FusionRun:
    """Train method ``name`` on one fold.

    ``params`` holds the config sections ``stage1``, ``stage2``, ``stage3``; ``projectors`` is the
    fold's Stage 2 ``projectors.pt`` (detached aligned methods); ``bags`` the bag sources of the
    no-detach methods (``manifest`` and ``tma_index`` paths).
    """
    spec = MethodSpec.from_declaration(name, declaration)
    inputs = FoldInputs.load(fold_inputs)  # validates: NaN/inf errors name the modality and the patient
    log.info("%s fold %d: %s; %d patients; device %s", name, inputs.fold, spec.as_dict(), inputs.n, device)
    if not spec.detach:
        from haf.fusion.joint import train_joint

        if bags is None:
            raise ValueError(f"{name}: detach false needs the bags (manifest, tma_index)")
        return train_joint(inputs, spec, params, device, bags=bags, progress=progress)
    bank, meta = (None, None)
    if spec.uses_stage2:
        if projectors is None:
            raise ValueError(f"{name}: align {spec.align} needs stage2/{spec.align}/fold_k/projectors.pt")
        bank, meta = load_projectors(projectors, device)
        if meta.get("align") != spec.align:
            raise ValueError(
                f"{projectors}: holds {meta.get('align')!r} projectors, {name} needs {spec.align!r}"
            )
        if int(meta.get("fold", inputs.fold)) != inputs.fold:
            raise ValueError(
                f"{projectors}: fold {meta.get('fold')} but the fold inputs are fold {inputs.fold}"
            )
    return train_fusion(
        inputs,
        spec,
        params["stage3"],
        params["stage2"],
        device,
        projectors=bank,
        stage2_meta=meta,
        progress=progress,
    )


def write_run(
    run: FusionRun, outputs: dict[str, str | Path], *, seed: int, evaluation: dict[str, Any]
) -> pd.DataFrame:
    """Predictions (val, test), masked test predictions, train log and model.pt via haf.method_io."""
    return write_method_outputs(
        outputs,
        method=run.spec.name,
        seed=seed,
        inputs=run.inputs,
        tensors=run.tensors,
        score_fn=run.score_fn,
        task_loss=run.spec.task_loss,
        evaluation=evaluation,
        history=run.history,
        checkpoint=run.checkpoint,
    )
