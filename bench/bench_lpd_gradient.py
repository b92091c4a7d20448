"""How far L_PD's gradient with v1 detached (the stable surrogate) is from the exact gradient.

q1 = normalise(U v1) with v1 taken without gradient (SPEC section 6: the exact derivative of the top
singular vector is unbounded at rank 1 and near tied singular values). This script measures, on random
batches of unit modality columns, the cosine between the surrogate's gradient of L_PD with respect to the
columns and the exact gradient (autograd through float64 ``torch.linalg.svd``), and the surrogate's share of
L_GA's gradient norm, for columns from unaligned (independent directions) to nearly aligned.

    python bench/bench_lpd_gradient.py            # prints one row per alignment level
"""

from __future__ import annotations

import _repo  # noqa: F401 (puts the checkout's src/ and tests/ first on sys.path)
import torch
import torch.nn.functional as F

from haf.alignment.losses import direction_loss, dominant_direction, global_alignment_loss


def exact_q1(cols: torch.Tensor) -> torch.Tensor:
    u, _, _ = torch.linalg.svd(cols.transpose(1, 2), full_matrices=False)  # (n, d, k)
    q = u[..., 0]
    sign = torch.sign((q * cols.sum(dim=1)).sum(dim=1)).detach()
    return q * sign.unsqueeze(1)


def main() -> None:
    torch.manual_seed(0)
    n, k, d, tau = 64, 7, 128, 0.1
    print("alignment  cos(surrogate, exact)  |grad L_PD| / |grad L_GA| (lambda_PD 0.01)")
    for spread in (3.0, 1.0, 0.3, 0.1):
        cosines, shares = [], []
        for _ in range(20):
            base = torch.randn(n, 1, d, dtype=torch.float64)
            cols = F.normalize(base + spread * torch.randn(n, k, d, dtype=torch.float64), dim=-1)
            a = cols.clone().requires_grad_(True)
            (g_sur,) = torch.autograd.grad(direction_loss(dominant_direction(a), tau), a)
            b = cols.clone().requires_grad_(True)
            (g_ex,) = torch.autograd.grad(direction_loss(exact_q1(b), tau), b)
            cosines.append(F.cosine_similarity(g_sur.flatten(), g_ex.flatten(), dim=0).item())
            c = cols.clone().requires_grad_(True)
            present = torch.ones(n, k, dtype=torch.bool)
            terms = global_alignment_loss(c, present, tau_sv=0.1, tau_pd=tau, lambda_pd=0.01)
            (g_all,) = torch.autograd.grad(terms.loss, c)
            shares.append((0.01 * g_sur.norm() / g_all.norm()).item())
        print(f"spread {spread:4.1f}  {sum(cosines) / len(cosines):.3f} (min {min(cosines):.3f})  "
              f"{sum(shares) / len(shares):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
