"""``demo-texture``: a deterministic, weight-free 1024-d colour/texture encoder for the SYNTHETIC demo.

Why it exists. The demo cohort's core images (``haf.demo.tma``) carry their planted signal in nuclear
density, size and darkness. UNI would need its gated weights and a GPU; a random ViT would scramble the
signal. This encoder keeps exactly the statistics that matter, with no weights, on CPU in milliseconds:

* 16 per-pixel maps of a tile: optical density (OD) of R, G, B; haematoxylin, eosin and DAB
  concentrations (Ruifrok-Johnston colour deconvolution); HSV saturation and value; darkness of the
  darkest channel; haematoxylin minus eosin; two difference-of-box-blur responses of the haematoxylin
  map (nucleus-sized blobs); local standard deviation of haematoxylin and of grey; gradient magnitude
  of haematoxylin and of grey.
* each map at 4 scales (the tile average-pooled by 1, 2, 4, 8), summarised by the share of pixels
  above 16 fixed thresholds spread over the map's range (from a histogram with linear interpolation
  between neighbouring bins: a continuous function of the pixels).
* 16 maps x 4 scales x 16 thresholds = 1024 values, each ``4 * sqrt(share)`` (the square root
  stabilises the variance of small shares such as the nuclear pixel fraction; values lie in [0, 4]),
  the same width and order of magnitude as the demo's 1024-d WSI bags, so the ``wsi_tma`` Stage 1 model
  can pool both.

Shares above thresholds, rather than bin shares, keep a small colour shift of the stroma (stain
jitter) a small change of the features; on H&E-like tiles they separated sparse from dense nuclei
best of the variants tried (bin shares, square-rooted bin shares, cumulative shares). More and darker
nuclei raise the high-threshold shares of the OD/haematoxylin/darkness maps and of the blob,
local-contrast and gradient maps, at every scale (tested). Input: RGB in [0, 1] (the registry
gives mean 0, std 1); computed in float32 whatever the autocast context.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Ruifrok & Johnston (2001) stain vectors (rows: haematoxylin, eosin, DAB), as in skimage's rgb_from_hed.
RGB_FROM_HED = (
    (0.65, 0.70, 0.29),
    (0.07, 0.99, 0.11),
    (0.27, 0.57, 0.78),
)
MAP_NAMES = (
    "od_r",
    "od_g",
    "od_b",
    "haematoxylin",
    "eosin",
    "dab",
    "saturation",
    "value",
    "darkness",
    "h_minus_e",
    "h_blob_small",
    "h_blob_large",
    "h_local_sd",
    "grey_local_sd",
    "h_gradient",
    "grey_gradient",
)
# Fixed histogram ranges per map (lo, hi): the 0.5-99.5 % quantiles (over all 4 scales) of 28 whole
# 256-px cores, demo renders at views -2.5..2.5 and tests/fakes/extract.py tiles at 0.3-3.5 nuclei per
# 1,000 px, rounded outward. Values outside a range go to its end bins.
RANGES = (
    (0.0, 0.22),  # od_r (OD / ln 255: background ~0.01, demo nuclei ~0.19)
    (0.0, 0.32),  # od_g
    (0.0, 0.15),  # od_b
    (-0.04, 0.26),  # haematoxylin
    (-0.02, 0.11),  # eosin
    (-0.01, 0.11),  # dab
    (0.0, 0.65),  # saturation
    (0.45, 1.0),  # value
    (0.0, 0.85),  # darkness
    (-0.11, 0.16),  # h_minus_e
    (-0.05, 0.09),  # h_blob_small
    (-0.05, 0.09),  # h_blob_large
    (0.0, 0.10),  # h_local_sd
    (0.0, 0.17),  # grey_local_sd
    (0.0, 0.13),  # h_gradient
    (0.0, 0.21),  # grey_gradient
)
SCALES = (1, 2, 4, 8)
BINS = 16  # thresholds per map and scale
DIM = len(MAP_NAMES) * len(SCALES) * BINS  # 1024
VERSION = "v1"


def _box_1d(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Mean over a window of ``k`` (odd) along ``dim``, shrinking at the edges (no padding counted)."""
    r = k // 2
    n = x.shape[dim]
    pad = [0, 0] * (x.dim() - 1 - (dim % x.dim())) + [r + 1, r]
    c = F.pad(x, pad).cumsum(dim)
    hi = torch.arange(n, device=x.device) + k  # window [i - r, i + r] in padded, cumsum-shifted indices
    lo = torch.arange(n, device=x.device)
    total = c.index_select(dim, hi) - c.index_select(dim, lo)
    count = (torch.minimum(lo + r, torch.tensor(n - 1)) - torch.clamp(lo - r, min=0) + 1).to(x.dtype)
    shape = [1] * x.dim()
    shape[dim] = n
    return total / count.view(shape)


def _blur(x: torch.Tensor, k: int) -> torch.Tensor:
    """k x k box mean with edge-shrunk windows (avg_pool2d with count_include_pad=False, but O(1) in k)."""
    return _box_1d(_box_1d(x, k, -1), k, -2)


class TextureEncoder(nn.Module):
    """Tiles (B, 3, H, W) RGB in [0, 1] -> (B, 1024) histogram features (see the module docstring)."""

    def __init__(self, max_values_per_chunk: int = 1 << 20) -> None:
        super().__init__()
        hed_from_rgb = torch.linalg.inv(torch.tensor(RGB_FROM_HED, dtype=torch.float64)).float()
        self.register_buffer("hed_from_rgb", hed_from_rgb, persistent=False)
        ranges = torch.tensor(RANGES, dtype=torch.float32)
        self.register_buffer("lo", ranges[:, 0].clone(), persistent=False)
        self.register_buffer("hi", ranges[:, 1].clone(), persistent=False)
        self.max_values_per_chunk = max_values_per_chunk
        self.num_features = DIM

    def maps(self, rgb: torch.Tensor) -> torch.Tensor:
        """The 16 per-pixel maps (B, 16, H, W) of RGB tiles in [0, 1]."""
        rgb = rgb.clamp(1.0 / 255.0, 1.0)
        od = -torch.log(rgb) / math.log(255.0)
        hed = torch.einsum("bchw,cs->bshw", od, self.hed_from_rgb)
        h, e, d = hed[:, 0:1], hed[:, 1:2], hed[:, 2:3]
        mx = rgb.amax(1, keepdim=True)
        mn = rgb.amin(1, keepdim=True)
        sat = (mx - mn) / mx
        grey = rgb.mean(1, keepdim=True)
        blob_small = _blur(h, 3) - _blur(h, 7)
        blob_large = _blur(h, 5) - _blur(h, 11)
        h_sd = (_blur(h * h, 5) - _blur(h, 5) ** 2).clamp_min(0).sqrt()
        g_sd = (_blur(grey * grey, 5) - _blur(grey, 5) ** 2).clamp_min(0).sqrt()
        return torch.cat(
            [
                od,
                h,
                e,
                d,
                sat,
                mx,
                1.0 - mn,
                h - e,
                blob_small,
                blob_large,
                h_sd,
                g_sd,
                _grad(h),
                _grad(grey),
            ],
            dim=1,
        )

    def exceedance(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, M, H, W) maps -> (B, M, BINS): share of pixels above each of BINS thresholds per map.

        A BINS + 1 bin histogram over the map's range with linear interpolation between neighbouring
        bins (so the shares are continuous in the pixel values), summed from the top (exactly 0 where no
        pixel is above a threshold).
        """
        b, m = maps.shape[:2]
        values = maps.reshape(b, m, -1)
        lo = self.lo.view(1, m, 1)
        hi = self.hi.view(1, m, 1)
        u = ((values - lo) / (hi - lo) * BINS).clamp(0, BINS)
        i0 = u.floor().clamp(max=BINS - 1)
        w1 = u - i0
        i0 = i0.long()
        hist = torch.zeros(b, m, BINS + 1, dtype=values.dtype, device=values.device)
        hist.scatter_add_(2, i0, 1.0 - w1)
        hist.scatter_add_(2, i0 + 1, w1)
        above = hist.flip(-1).cumsum(-1).flip(-1)[..., 1:]  # mass in the bins above each threshold
        return above / values.shape[-1]

    def _features(self, rgb: torch.Tensor) -> torch.Tensor:
        parts = []
        for s in SCALES:
            x = F.avg_pool2d(rgb, s) if s > 1 else rgb
            parts.append(self.exceedance(self.maps(x)))
        exceed = torch.stack(parts, dim=1)  # (B, scales, maps, thresholds)
        return 4.0 * exceed.clamp_min(0).sqrt().reshape(rgb.shape[0], DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < max(SCALES) or x.shape[-2] < max(SCALES):
            raise ValueError(
                f"demo-texture needs tiles of at least {max(SCALES)} px, got {tuple(x.shape[-2:])}"
            )
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            per_tile = len(MAP_NAMES) * x.shape[-1] * x.shape[-2]
            chunk = max(1, self.max_values_per_chunk // per_tile)
            return torch.cat([self._features(x[i : i + chunk]) for i in range(0, len(x), chunk)], dim=0)


def _grad(x: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude by central differences (edges replicated)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    dx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2
    dy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2
    return (dx * dx + dy * dy).sqrt()
