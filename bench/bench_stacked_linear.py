"""StackedLinear's backward: autograd's own (a transposed weight gradient) vs the contiguous one (issue 13).

Autograd's backward of ``bmm(x, W.transpose(1, 2))`` hands dL/dW over as a transposed view, and adding it
into the contiguous flat gradient buffer of ``FlatParameters`` is a strided add.  The layer now computes
dL/dW_k = g_k^T x_k into a (K, out, in) tensor itself (``haf.runtime.stacked._StackedLinearFunction``).

Old path: ``StackedLinear.forward`` replaced, in this process, by the former forward (plain ``bmm`` /
``baddbmm``, autograd's backward).  New path: this checkout's layer.  Both train the same ten synthetic
folds (``tests/fakes/fusion.py``, 200 patients) with the same stacked trainer, one thread, one after the
other in this process (after one untimed warm-up epoch), and print training seconds, the ratio and the
largest difference of fold 3's trained weights (0: bit-identical; PARACHUTE's SAM + GCS steps amplify
the last-bit differences of the gradients, see docs/comparators.md).

    python bench/bench_stacked_linear.py                       # parachute 5 epochs, three others 30
    python bench/bench_stacked_linear.py --families parachute --epochs 10
"""

from __future__ import annotations

import argparse
import time

import _repo  # noqa: F401 (puts the checkout's src/ and tests/ first on sys.path)
import torch
from fakes.config import declare, load_config
from fakes.fusion import synthetic_fold_inputs

from haf.comparators.train import train_comparator_folds
from haf.fusion.spec import MethodSpec
from haf.fusion.train import train_fusion_folds
from haf.runtime import stacked
from haf.settings import Stage2Settings, Stage3Settings

FAMILIES = ["parachute", "feature_interaction", "attention_fusion", "drop"]
NEW_FORWARD = stacked.StackedLinear.forward


def old_forward(self: stacked.StackedLinear, x: torch.Tensor) -> torch.Tensor:
    """The former forward: autograd's backward of bmm (its weight gradient is a transposed view)."""
    k = x.shape[0]
    flat = x.reshape(k, -1, x.shape[-1])
    w_t = self.weight.transpose(1, 2)
    out = torch.bmm(flat, w_t) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), flat, w_t)
    return out.reshape(*x.shape[:-1], self.out_features)


def train(family: str, epochs: int, folds: list) -> tuple[float, list[torch.Tensor], list[int]]:
    config = load_config({"parachute": {"max_epochs": epochs}, "stage3": {"max_epochs": epochs}})
    start = time.perf_counter()
    if family == "drop":
        decl = declare({family: {"family": "fusion", "align": "none", "drop": True}})[family]
        spec = MethodSpec.from_declaration(family, decl)
        s2, s3 = Stage2Settings.from_config(config["stage2"]), Stage3Settings.from_config(config["stage3"])
        runs = train_fusion_folds(folds, spec, s3, s2, torch.device("cpu"))
    else:
        decl = declare({family: {"family": family}})[family]
        sections = {"stage3": config["stage3"], "parachute": config["parachute"]}
        runs = train_comparator_folds(folds, decl, sections, torch.device("cpu"))
    seconds = time.perf_counter() - start
    weights = [p.detach().clone() for p in runs[3].model.parameters()]
    return seconds, weights, [len(r.history) for r in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    parser.add_argument(
        "--epochs", type=int, default=None, help="max_epochs (default: parachute 5, others 30)"
    )
    parser.add_argument("--patients", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folds = [
        synthetic_fold_inputs(args.patients, fold=f, n_folds=10, dims={"wsi": 64, "tma": 64})
        for f in range(10)
    ]
    print(f"10 folds x {args.patients} patients, 1 thread, training seconds; old = autograd's bmm backward")
    print(
        f"{'family':<20} {'epochs':>6} {'old s':>8} {'new s':>8} {'ratio':>6}  max |w_old - w_new| (fold 3)"
    )
    train(args.families[0], 1, folds)  # warm-up (first-call allocations), not timed
    for family in args.families:
        epochs = args.epochs or (5 if family == "parachute" else 30)
        stacked.StackedLinear.forward = old_forward
        a, wa, ea = train(family, epochs, folds)
        stacked.StackedLinear.forward = NEW_FORWARD
        b, wb, eb = train(family, epochs, folds)
        diff = max(float((x - y).abs().max()) for x, y in zip(wa, wb, strict=True))
        same = "" if ea == eb else f" (epochs differ: {ea} vs {eb})"
        print(f"{family:<20} {epochs:6d} {a:8.2f} {b:8.2f} {a / b:6.2f}  {diff:.3g}{same}", flush=True)


if __name__ == "__main__":
    main()
