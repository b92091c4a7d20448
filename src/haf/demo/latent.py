"""The hidden truth of the demo cohort: latent risk, per-modality views of it, survival, availability.

A latent risk ``r ~ N(0, 1)`` drives Weibull death times (proportional hazards, hazard ratio
``exp(BETA * r)`` per unit of ``r``). Each modality m sees its own noisy view
``x_m = (s_m * r + e_m) / sqrt(1 + s_m^2)`` (standard normal, correlation ``s_m / sqrt(1 + s_m^2)``
with ``r``; ``s_m = 0`` is pure noise); the modality's files are then generated from ``x_m`` only.
Censoring combines administrative end of follow-up (diagnosis years 2005-2019, data cut mid 2021)
with random loss to follow-up, tuned so that the cohort resembles HANCOCK: about 30 % deaths, a
median follow-up of the living near 4 years, and a 5-year label for roughly 55-60 % of patients.

Controls (config ``demo.control``, :func:`apply_control`) change the truth so that a claim cannot hold
or holds by construction: ``no_signal`` (every view pure noise), ``permuted_labels`` (the outcomes of
another patient), ``missing_noise`` (blood pure noise, its presence falling with the risk).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from haf.demo.common import AVAILABILITY, SIGNAL_KEYS, rng_for, sigmoid

WEIBULL_SHAPE = 0.9  # < 1: hazard highest early after diagnosis, as in head-and-neck cancer
WEIBULL_SCALE_DAYS = 7000.0
BETA = 1.0  # log hazard ratio per SD of latent risk
LOSS_MEDIAN_DAYS = 2800.0  # median time to loss of follow-up
DATA_CUT_YEAR = 2021.5
DIAGNOSIS_YEARS = (2005, 2019)
MIN_FOLLOWUP_DAYS = 9  # HANCOCK's shortest days_to_last_information
HORIZON_DAYS = 1825  # only for the truth table's reference label; the pipeline has its own rule

CONTROLS: tuple[str, ...] = ("none", "no_signal", "permuted_labels", "missing_noise")
"""The generator's controls (config ``demo.control``; docs/demo.md "Controls")."""
MISSING_NOISE_MODALITY = "blood"
"""``missing_noise``: the modality made pure noise whose presence depends on the latent risk."""
MISSING_NOISE_LOGIT = (1.0, -1.5)
"""``missing_noise``: P(the modality is present) = sigmoid(a + b * r): about 2/3 present, fewer at high risk."""


@dataclass(frozen=True)
class Latent:
    """Per-patient hidden quantities (arrays of length n, in patient order)."""

    risk: np.ndarray
    views: dict[str, np.ndarray]  # modality -> x_m
    year: np.ndarray  # year of initial diagnosis
    time: np.ndarray  # days_to_last_information (int)
    event: np.ndarray  # 1 = deceased
    available: dict[str, np.ndarray]  # wsi/tma/cell/blood/icd -> bool (clin/path: always)
    on_tma: np.ndarray  # patient placed on the TMA blocks
    outcome_risk: np.ndarray | None = None  # the risk behind the outcome fields; None = ``risk``

    @property
    def outcome(self) -> np.ndarray:
        """The latent risk that drives this patient's outcome fields (``risk`` unless permuted)."""
        return self.risk if self.outcome_risk is None else self.outcome_risk

    @property
    def n(self) -> int:
        return len(self.risk)

    def horizon_label(self, horizon: int = HORIZON_DAYS) -> np.ndarray:
        """1 = died within ``horizon``, 0 = known alive beyond it, NaN = censored earlier."""
        label = np.full(self.n, np.nan)
        label[(self.event == 1) & (self.time <= horizon)] = 1.0
        label[self.time > horizon] = 0.0
        return label


def draw_latent(n: int, seed: int, signal: dict[str, float]) -> Latent:
    """Draw the latent risk, the modality views, survival and availability for ``n`` patients."""
    rng = rng_for(seed, "latent")
    risk = rng.standard_normal(n)
    views = {}
    for key in SIGNAL_KEYS:
        s = float(signal[key])
        noise = rng_for(seed, f"view:{key}").standard_normal(n)
        views[key] = (s * risk + noise) / np.sqrt(1.0 + s * s)

    srng = rng_for(seed, "survival")
    u = srng.random(n)
    death = WEIBULL_SCALE_DAYS * (-np.log(u) / np.exp(BETA * risk)) ** (1.0 / WEIBULL_SHAPE)
    year = srng.integers(DIAGNOSIS_YEARS[0], DIAGNOSIS_YEARS[1] + 1, n)
    diagnosis = year + srng.random(n)
    administrative = (DATA_CUT_YEAR - diagnosis) * 365.25
    loss = srng.exponential(LOSS_MEDIAN_DAYS / np.log(2.0), n)
    censor = np.minimum(administrative, loss)
    event = (death <= censor).astype(int)
    time = np.maximum(np.rint(np.minimum(death, censor)), MIN_FOLLOWUP_DAYS).astype(int)

    arng = rng_for(seed, "availability")
    available = {m: arng.random(n) < p for m, p in AVAILABILITY.items()}
    # TMA cores and cell densities come from the same TMA blocks: a patient missing from the blocks
    # has neither; among those on the blocks each is lost with its own (small) rate.
    on_tma = arng.random(n) < 0.985
    available["tma"] = on_tma & (arng.random(n) < AVAILABILITY["tma"] / 0.985)
    available["cell"] = on_tma & (arng.random(n) < AVAILABILITY["cell"] / 0.985)
    return Latent(
        risk=risk,
        views=views,
        year=year,
        time=time,
        event=event,
        available=available,
        on_tma=on_tma,
    )


def control_signal(signal: dict[str, float], control: str) -> dict[str, float]:
    """The signal strengths a control generates with: all 0 (``no_signal``), blood 0 (``missing_noise``)."""
    if control not in CONTROLS:
        raise ValueError(f"demo.control must be one of {', '.join(CONTROLS)}, got {control!r}")
    if control == "no_signal":
        return {k: 0.0 for k in signal}
    if control == "missing_noise":
        return {**signal, MISSING_NOISE_MODALITY: 0.0}
    return dict(signal)


def apply_control(latent: Latent, control: str, seed: int) -> Latent:
    """The truth of a control cohort, drawn after :func:`draw_latent` from the control's own stream.

    ``permuted_labels``: every patient gets another patient's survival (time, event, diagnosis year,
    which sets the administrative censoring) and the latent risk behind the other outcome fields
    (cause of death, recurrence, progression, metastasis), one seeded permutation for all; the
    features still follow the patient's own risk. ``missing_noise``: the presence of
    :data:`MISSING_NOISE_MODALITY` is drawn again, P = sigmoid(1.0 - 1.5 r). ``none`` and ``no_signal``
    (whose views :func:`control_signal` already made noise) leave the truth as it is.
    """
    if control not in CONTROLS:
        raise ValueError(f"demo.control must be one of {', '.join(CONTROLS)}, got {control!r}")
    if control == "permuted_labels":
        perm = rng_for(seed, "control:permuted_labels").permutation(latent.n)
        return replace(
            latent,
            time=latent.time[perm],
            event=latent.event[perm],
            year=latent.year[perm],
            outcome_risk=latent.risk[perm],
        )
    if control == "missing_noise":
        a, b = MISSING_NOISE_LOGIT
        u = rng_for(seed, "control:missing_noise").random(latent.n)
        available = {**latent.available, MISSING_NOISE_MODALITY: u < sigmoid(a + b * latent.risk)}
        return replace(latent, available=available)
    return latent
