"""Typed settings, one frozen dataclass per config section; the schema is the one source of defaults.

``config/schema.yaml`` types, ranges and defaults every key; Snakemake validates the config and fills
the defaults before any job runs.  A rule script builds its section's settings once
(``Stage1Settings.from_config(snakemake.params.stage1)``) and passes them down, so library code
never looks a key up with a fallback.  :meth:`Section.from_config` is strict both ways (STAMP's
``extra="forbid"``): an unknown key and a missing key are errors naming ``section.key``, so a typo
in a config or a config that skipped the schema fails at once instead of training with a default.

Library users and tests get a schema-filled config from :func:`fill_defaults` (any partial config,
e.g. the shipped ``config/config.yaml`` plus overrides).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from haf.errors import HafConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "config" / "schema.yaml"

S = TypeVar("S", bound="Section")


@dataclass(frozen=True)
class TrainSettings:
    """The training protocol of :func:`haf.runtime.fit.fit`, taken from a stage's section.

    ``optimizer`` (adam | adamw) and ``scheduler`` (plateau | cosine | none) are fixed by the stage's
    paper (HAF: Adam + ReduceLROnPlateau; PARACHUTE: AdamW + cosine); ``lr_patience``/``lr_factor``
    apply to plateau, ``eta_min``/``t_max`` to cosine.
    """

    lr: float
    weight_decay: float
    max_epochs: int
    optimizer: str
    scheduler: str
    lr_patience: int
    lr_factor: float
    eta_min: float
    t_max: int
    es_patience: int


class Section:
    """Mixin for a frozen dataclass mirroring one config section (see the module docstring)."""

    SECTION: ClassVar[str]

    @classmethod
    def from_config(cls: type[S], raw: Mapping[str, Any] | S) -> S:
        """Build from a schema-filled section; unknown or missing keys are errors naming the key."""
        if isinstance(raw, cls):
            return raw
        if not isinstance(raw, Mapping):
            raise HafConfigError(f"{cls.SECTION}: expected a mapping of settings, got {type(raw).__name__}")
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise HafConfigError(
                f"{cls.SECTION}.{unknown[0]}: not a setting of this section; known: {', '.join(names)}"
            )
        missing = [n for n in names if n not in raw]
        if missing:
            raise HafConfigError(
                f"{cls.SECTION}.{missing[0]}: missing. Settings are built from a schema-validated config, "
                "which fills every default (Snakemake does this; in Python use haf.settings.fill_defaults)"
            )
        types = {f.name: f.type for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{n: _coerce(types[n], _freeze(raw[n])) for n in names})

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists, dicts), e.g. to store in a checkpoint."""
        return _thaw(asdict(self))  # type: ignore[call-overload]


def _coerce(annotation: Any, value: Any) -> Any:
    """YAML writes ``1`` for a float setting: store floats as floats (bools and None untouched)."""
    if annotation == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation == "tuple[float, ...]" and isinstance(value, tuple):
        return tuple(float(v) for v in value)
    return value


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    return value


def _training(section: Any, *, optimizer: str, scheduler: str) -> TrainSettings:
    """The protocol part of a stage section (optimiser and schedule are the stage's protocol, not config)."""
    return TrainSettings(
        lr=float(section.lr),
        weight_decay=float(section.weight_decay),
        max_epochs=int(section.max_epochs),
        optimizer=optimizer,
        scheduler=scheduler,
        lr_patience=int(getattr(section, "lr_patience", 0)),
        lr_factor=float(getattr(section, "lr_factor", 1.0)),
        eta_min=float(getattr(section, "eta_min", 0.0)),
        t_max=int(getattr(section, "t_max", 1)),
        es_patience=int(section.es_patience),
    )


@dataclass(frozen=True)
class DemoSettings(Section):
    SECTION: ClassVar[str] = "demo"
    enabled: bool
    n_patients: int
    seed: int
    signal: dict[str, float]
    wsi_bag_size: tuple[int, int]
    core_px: int
    control: str


@dataclass(frozen=True)
class TargetSettings(Section):
    SECTION: ClassVar[str] = "target"
    rule: str
    horizon_days: int


@dataclass(frozen=True)
class CVSettings(Section):
    SECTION: ClassVar[str] = "cv"
    scheme: str
    k: int
    repeats: int
    seed: int
    val_fraction: float
    val_from: str


@dataclass(frozen=True)
class TabularSettings(Section):
    SECTION: ClassVar[str] = "tabular"
    preprocessing: str
    icd_min_df: int
    blood_duplicates: str
    blood_outlier: str


@dataclass(frozen=True)
class ExtractSettings(Section):
    SECTION: ClassVar[str] = "extract"
    encoder: str
    weights: str | None
    markers: tuple[str, ...]
    tile_px: int
    tile_mpp: float
    core_mpp: float
    tissue_saturation_min: float
    tissue_value_max: float
    min_tissue_fraction: float
    batch_size: int
    num_workers: int | None
    compile: bool
    channels_last: bool
    on_unreadable: str
    min_tiled_core_fraction: float
    precomputed: dict[str, Any]


@dataclass(frozen=True)
class TrainingSettings(Section):
    """The ``training`` section: how every per-fold model selects the epoch it keeps."""

    SECTION: ClassVar[str] = "training"
    selection: str
    min_epochs: int
    smooth_window: int
    average_last: int
    min_val_patients: int


@dataclass(frozen=True)
class Stage1Settings(Section):
    """The ``stage1`` section: CLAM sizes, loss mix, batching, protocol (HAF paper section 3.1)."""

    SECTION: ClassVar[str] = "stage1"
    wsi_dim: int
    d1: int
    d2: int
    dropout: float
    bag_weight: float
    k_sample: int
    max_instances: int
    batch_bags: int
    lr: float
    weight_decay: float
    max_epochs: int
    lr_patience: int
    lr_factor: float
    es_patience: int
    seed: int
    cache_gb_cpu: float
    cache_gb_gpu: float
    wsi_tma_requires_both: bool
    max_abs_feature: float | None
    on_empty_val: str

    @property
    def train(self) -> TrainSettings:
        """Adam + ReduceLROnPlateau on the validation loss (HAF paper)."""
        return _training(self, optimizer="adam", scheduler="plateau")

    @property
    def instance_budget(self) -> int:
        """Instances per evaluation batch (``batch_bags * max_instances``): the training batch's worst case."""
        return self.batch_bags * self.max_instances

    def cache_budget_bytes(self, device_type: str) -> float:
        """How many bytes of bags may be cached on the training device."""
        return (self.cache_gb_gpu if device_type == "cuda" else self.cache_gb_cpu) * 1e9


@dataclass(frozen=True)
class Stage2Settings(Section):
    """The ``stage2`` section: projector sizes, alignment losses, protocol."""

    SECTION: ClassVar[str] = "stage2"
    d_out: int
    hidden: int
    tau_sv: float
    tau_pd: float
    lambda_pd: float
    lambda_sv: float
    tau_clip: float
    lr: float
    weight_decay: float
    max_epochs: int
    batch_size: int
    lr_patience: int
    lr_factor: float
    es_patience: int
    seed: int

    @property
    def train(self) -> TrainSettings:
        return _training(self, optimizer="adam", scheduler="plateau")


@dataclass(frozen=True)
class Stage3Settings(Section):
    """The ``stage3`` section: fusion MLP, MoFe weight, protocol (also the binary comparators')."""

    SECTION: ClassVar[str] = "stage3"
    hidden: int
    dropout: float
    lambda_mofe: float
    reduced_draw: str
    lr: float
    weight_decay: float
    max_epochs: int
    batch_size: int
    lr_patience: int
    lr_factor: float
    es_patience: int
    seed: int

    @property
    def train(self) -> TrainSettings:
        return _training(self, optimizer="adam", scheduler="plateau")


@dataclass(frozen=True)
class ParachuteSettings(Section):
    """The ``parachute`` section (PARACHUTE supplement section 1 and Algorithm 2)."""

    SECTION: ClassVar[str] = "parachute"
    d: int
    d_int: int
    heads: int
    dropout: float
    lr: float
    eta_min: float
    t_max: int
    weight_decay: float
    max_epochs: int
    batch_size: int
    es_patience: int
    ties: str
    cox_normalisation: str
    gcs: bool
    rho: float
    gamma: float
    epsilon: float
    missing_weight: float
    p_miss: float
    seed: int

    @property
    def train(self) -> TrainSettings:
        """AdamW + cosine annealing (PARACHUTE)."""
        return _training(self, optimizer="adamw", scheduler="cosine")


@dataclass(frozen=True)
class SksurvSettings(Section):
    """The ``sksurv`` section: the classical survival baselines (family ``sksurv``, scikit-survival).

    Each fold's model is fitted on its training part; a list of more than one penalty is a grid whose
    value is chosen by Harrell's C on the fold's validation part (ties: the stronger penalty).
    """

    SECTION: ClassVar[str] = "sksurv"
    coxph_alpha: tuple[float, ...]
    coxph_ties: str
    coxnet_l1_ratio: float
    coxnet_n_alphas: int
    coxnet_alpha_min_ratio: float
    coxnet_max_iter: int


@dataclass(frozen=True)
class EvaluationSettings(Section):
    SECTION: ClassVar[str] = "evaluation"
    threshold: str
    dropout_p: tuple[float, ...]
    parachute_p: tuple[float, ...]
    parachute_scenarios: tuple[str, ...]
    repeats: int
    mask_seed: int
    bootstrap: int
    bootstrap_seed: int
    horizons_days: tuple[float, ...]
    td_auc_points: int
    tsne_seed: int
    tsne_fold: int
    calibration_bins: int
    reference_method: str
    claims_flat_margin: float
    early_epoch: int
    figure_methods: tuple[str, ...]
    survival_methods: tuple[str, ...]
    parachute_methods: tuple[str, ...] | None
    attention_patients: tuple[str, ...] | None
    attention_top_k: int


SECTIONS: dict[str, type[Section]] = {
    cls.SECTION: cls
    for cls in (
        DemoSettings,
        TargetSettings,
        CVSettings,
        TabularSettings,
        ExtractSettings,
        TrainingSettings,
        Stage1Settings,
        Stage2Settings,
        Stage3Settings,
        ParachuteSettings,
        SksurvSettings,
        EvaluationSettings,
    )
}
"""Config section name -> its settings class (tests check these against the schema's properties)."""


# ---------------------------------------------------------------------------------------------
# schema defaults for library users and tests


def fill_defaults(config: Mapping[str, Any], schema: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """A deep copy of ``config`` validated against the schema with every default filled in.

    Uses Snakemake's own validator (the one the workflow runs), so library code and the workflow
    see identical defaults.
    """
    from snakemake.utils import validate

    filled = copy.deepcopy(dict(config))
    validate(filled, str(schema), set_default=True)
    return filled


def schema_section(name: str, schema: str | Path = SCHEMA_PATH) -> Section:
    """The typed settings of a flat config section at the schema's defaults (e.g. ``training`` for a
    library caller that does not configure it): read from the schema, never written in code."""
    import yaml

    props = yaml.safe_load(Path(schema).read_text())["properties"][name]["properties"]
    missing = [key for key, prop in props.items() if "default" not in prop]
    if missing:
        raise HafConfigError(f"{name}.{missing[0]} has no schema default; configure the section")
    return SECTIONS[name].from_config({key: prop["default"] for key, prop in props.items()})


def section(config: Mapping[str, Any], name: str) -> Section:
    """The typed settings of section ``name`` of a schema-filled config."""
    try:
        cls = SECTIONS[name]
    except KeyError:
        raise HafConfigError(f"{name}: not a typed config section ({', '.join(SECTIONS)})") from None
    return cls.from_config(config[name])
