"""Methods: the family registry, method declarations, and which methods each table and figure shows.

A method is a declaration in ``config.methods`` (``family`` plus the family's keys; the schema fills
their defaults); ``run_methods`` picks which run.  :data:`METHOD_FAMILIES` is the one place that
names every family, the kind of rule that trains it, the config section holding its training
settings, and (for comparators) the functions that build its model and make its optimiser step,
referenced by import path so that this module stays importable without torch (the Snakefile and
the data/eval rules import it).

Adding a comparator: its model and builder, one entry here, the family in the schema's enum, a test.
The classical baselines (family ``sksurv``) are fitted in closed form by scikit-survival, without the
stacked trainer: their entry names the function that fits every fold and writes its outputs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from haf.errors import HafConfigError
from haf.modalities import MODALITIES, PATHOLOGY_MODELS


@dataclass(frozen=True)
class MethodFamily:
    """One family of methods and how it is trained."""

    name: str
    kind: str  # clam (Stage 1 rule) | fusion (Stage 3 rules) | comparator (rule comparator) | sksurv (rule sksurv)
    section: str  # config section with the family's training settings
    task_loss: str | None  # the family's fixed loss; None: declared per method (bce | cox)
    build: str | None = None  # comparators: "module:function" (declaration, dims, settings) -> model
    step: str | None = None  # comparators: "module:function" (model, members, settings) -> stacked step
    fit: str | None = None  # sksurv: "module:function" fitting every fold and writing its outputs


METHOD_FAMILIES: dict[str, MethodFamily] = {
    "clam": MethodFamily("clam", "clam", "stage1", "bce"),
    "fusion": MethodFamily("fusion", "fusion", "stage3", None),
    "late_fusion": MethodFamily(
        "late_fusion", "comparator", "stage3", "bce",
        "haf.comparators.builders:late_fusion", "haf.comparators.train:standard_step",
    ),
    "attention_fusion": MethodFamily(
        "attention_fusion", "comparator", "stage3", "bce",
        "haf.comparators.builders:attention_fusion", "haf.comparators.train:standard_step",
    ),
    "mfmf": MethodFamily(
        "mfmf", "comparator", "stage3", "bce",
        "haf.comparators.builders:mfmf", "haf.comparators.train:standard_step",
    ),
    "feature_interaction": MethodFamily(
        "feature_interaction", "comparator", "stage3", "bce",
        "haf.comparators.builders:feature_interaction", "haf.comparators.train:standard_step",
    ),
    "parachute": MethodFamily(
        "parachute", "comparator", "parachute", "cox",
        "haf.comparators.builders:parachute", "haf.comparators.train:gcs_step",
    ),
    # classical survival baselines (PARACHUTE's Table 5 CoxPH, its supplement's CoxNet): scikit-survival,
    # closed-form per fold, no GPU (rule sksurv)
    "sksurv": MethodFamily("sksurv", "sksurv", "sksurv", "cox", fit="haf.comparators.sksurv:run_sksurv_folds"),
}  # fmt: skip
"""The method-family registry (the schema's ``methods.*.family`` enum lists exactly these names)."""

COMPARATOR_FAMILIES: tuple[str, ...] = tuple(n for n, f in METHOD_FAMILIES.items() if f.kind == "comparator")
SKSURV_FAMILIES: tuple[str, ...] = tuple(n for n, f in METHOD_FAMILIES.items() if f.kind == "sksurv")
TASK_LOSSES: tuple[str, ...] = ("bce", "cox")
TOKEN_MODES: tuple[str, ...] = ("modality", "instance")
"""What the attention comparators attend over (``methods.*.tokens``): one vector per modality (the Stage 1 z
for wsi/tma), or the instances of the WSI/TMA bags (:mod:`haf.mil.tokens`) plus one token per tabular modality."""
TOKEN_FAMILIES: tuple[str, ...] = ("attention_fusion", "mfmf")
"""The families with a token-level variant (``tokens: instance``)."""
ENCODER_INITS: tuple[str, ...] = ("scratch", "stage1")
"""Where a no-detach method's CLAM encoders start (``methods.*.init``): fresh, or the fold's Stage 1 models."""


def resolve(reference: str) -> Callable[..., Any]:
    """The function a registry entry names as ``"package.module:function"``."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def family(name: str) -> MethodFamily:
    try:
        return METHOD_FAMILIES[name]
    except KeyError:
        raise HafConfigError(f"family {name!r} is not one of {', '.join(METHOD_FAMILIES)}") from None


def method_declaration(name: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """One method's declaration, completed and checked.

    The schema has already filled the keys' defaults; this adds what depends on other keys: the
    display ``label`` (the name), ``modalities`` (all seven, in slot order; a clam method's from its
    pathology model) and the family's fixed loss.
    """
    decl = dict(raw)
    fam = decl.get("family")
    if fam not in METHOD_FAMILIES:
        raise HafConfigError(f"methods.{name}.family: {fam!r} is not one of {', '.join(METHOD_FAMILIES)}")
    decl.setdefault("label", name)
    fixed = METHOD_FAMILIES[fam].task_loss
    if fixed is not None:  # the schema fills task_loss: bce everywhere; a family's own loss wins
        decl["task_loss"] = fixed
    _check_per_p(name, decl)
    if fam == "clam":
        if decl.get("pathology_model") not in PATHOLOGY_MODELS:
            raise HafConfigError(
                f"methods.{name}.pathology_model must be one of {', '.join(PATHOLOGY_MODELS)} for a clam method"
            )
        decl["modalities"] = (
            ["wsi", "tma"] if decl["pathology_model"] == "wsi_tma" else [decl["pathology_model"]]
        )
        return decl
    modalities = decl.get("modalities") or list(MODALITIES)
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise HafConfigError(
            f"methods.{name}.modalities: unknown modality {unknown[0]!r}; expected {', '.join(MODALITIES)}"
        )
    # keep the canonical slot order whatever order the config lists them in
    decl["modalities"] = [m for m in MODALITIES if m in modalities]
    if fam == "mfmf" and decl.get("value_modality") not in decl["modalities"]:
        raise HafConfigError(
            f"methods.{name}.value_modality {decl.get('value_modality')!r} is not among its modalities"
        )
    _check_tokens(name, decl)
    return decl


def uses_instance_tokens(decl: Mapping[str, Any]) -> bool:
    """A token-level comparator (``tokens: instance``): its rule reads the bags (manifest, TMA index)."""
    return decl.get("tokens", "modality") == "instance"


def _check_tokens(name: str, decl: dict[str, Any]) -> None:
    """``tokens: instance`` belongs to the attention families and needs a pathology modality to take them from."""
    from haf.modalities import PATHOLOGY

    mode = decl.get("tokens", "modality")
    if mode not in TOKEN_MODES:
        raise HafConfigError(f"methods.{name}.tokens: {mode!r} is not one of {', '.join(TOKEN_MODES)}")
    if mode != "instance":
        return
    if decl["family"] not in TOKEN_FAMILIES:
        raise HafConfigError(
            f"methods.{name}.tokens: instance tokens are implemented for {', '.join(TOKEN_FAMILIES)}, "
            f"not family {decl['family']!r}"
        )
    if not any(m in PATHOLOGY for m in decl["modalities"]):
        raise HafConfigError(
            f"methods.{name}.tokens: instance tokens come from the wsi/tma bags, which are not among its "
            f"modalities {decl['modalities']}"
        )
    if decl["family"] == "mfmf" and decl.get("value_modality") not in PATHOLOGY:
        raise HafConfigError(
            f"methods.{name}.value_modality: with tokens: instance the value modality provides the instance "
            f"tokens, so it must be wsi or tma (got {decl.get('value_modality')!r})"
        )


def _check_per_p(name: str, decl: dict[str, Any]) -> None:
    """``p_miss`` and ``per_p_of`` belong to the parachute family; a per-p model trains at some p_miss > 0."""
    p_miss, base = decl.get("p_miss"), decl.get("per_p_of")
    if decl["family"] != "parachute":
        for key, value in (("p_miss", p_miss), ("per_p_of", base)):
            if value is not None:
                raise HafConfigError(
                    f"methods.{name}.{key}: only the parachute family trains with runtime masking "
                    f"(family {decl['family']!r})"
                )
        return
    if base is not None and (p_miss is None or not float(p_miss) > 0):
        raise HafConfigError(
            f"methods.{name}.per_p_of: {base!r}: a per-p model needs its own p_miss > 0 (got {p_miss!r})"
        )
    if base == name:
        raise HafConfigError(f"methods.{name}.per_p_of names the method itself")


def per_p_models(methods: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[float, str]]:
    """PARACHUTE's per-p protocol: base method -> {p_miss: the method trained at that p_miss}.

    Built from the declarations with ``per_p_of`` among ``methods``; two methods of one base at the same
    p_miss are an error.
    """
    groups: dict[str, dict[float, str]] = {}
    for name, decl in methods.items():
        base = decl.get("per_p_of")
        if base is None:
            continue
        p = round(float(decl["p_miss"]), 6)
        group = groups.setdefault(str(base), {})
        if p in group:
            raise HafConfigError(
                f"methods.{name} and methods.{group[p]} are both per_p_of {base!r} at p_miss {p:g}"
            )
        group[p] = name
    return {base: dict(sorted(group.items())) for base, group in groups.items()}


def active_methods(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The methods named in ``run_methods``, declarations completed; unknown names are an error."""
    declared = config.get("methods") or {}
    unknown = [m for m in config["run_methods"] if m not in declared]
    if unknown:
        raise HafConfigError(
            f"run_methods names {', '.join(map(repr, unknown))}, which config.methods does not declare; "
            f"declared methods: {', '.join(sorted(declared))}"
        )
    return {name: method_declaration(name, declared[name]) for name in config["run_methods"]}


def methods_of_kind(methods: Mapping[str, Mapping[str, Any]], kind: str) -> list[str]:
    """Names of the methods whose family is of ``kind`` (clam, fusion, comparator, sksurv), in config order."""
    return [m for m, d in methods.items() if METHOD_FAMILIES[d["family"]].kind == kind]


def is_joint(decl: Mapping[str, Any]) -> bool:
    """A no-detach fusion ablation (Stages 1-3 trained jointly, Eq. 12)."""
    return decl["family"] == "fusion" and not decl["detach"]


def is_warm_joint(decl: Mapping[str, Any]) -> bool:
    """A no-detach ablation whose CLAM encoders start from the fold's Stage 1 models (``init: stage1``):
    its rule reads ``stage1/{pm}/fold_k/model.pt`` of its pathology modalities."""
    return is_joint(decl) and decl.get("init", "scratch") == "stage1"


# ---------------------------------------------------------------------------------------------
# which methods each table and figure shows (the Snakefile's evaluation rules take these lists)

TABLE2_SETTINGS: tuple[tuple[str, str], ...] = (
    ("fusion_mlp_all", "All modalities"),
    ("ga", "+ Global Alignment"),
    ("drop", "+ Random Drop"),
    ("haf", "HAF"),
)
"""HAF Table 2: each setting's detached method; its ablations are the :data:`TABLE2_VARIANTS`."""

TABLE2_VARIANTS: tuple[tuple[str, str], ...] = (
    ("nodetach", "w/o, from scratch"),
    ("nodetach_warm", "w/o, warm (Stage 1)"),
)
"""Table 2's no-detach columns: method ``<setting>_<suffix>`` and its column label.  ``nodetach``: the CLAM
encoders trained from scratch inside Eq. 12 (``init: scratch``); ``nodetach_warm``: from the fold's Stage 1
models (``init: stage1``), under the same Stage 3 epoch budget and selection rule."""


def table2_methods(base: str) -> list[str]:
    """The no-detach ablations of one Table 2 setting, in column order."""
    return [f"{base}_{suffix}" for suffix, _ in TABLE2_VARIANTS]


CLAIM_METHODS: tuple[str, ...] = ("haf", "fusion_mlp_all", "ga", "drop")
"""Methods the claims table compares (haf.eval.claims), besides the Table 2 pairs."""
CLAIM_MASKED_METHODS: tuple[str, ...] = ("haf", "fusion_mlp_all", "ga")
"""Methods whose Fig. 2 masked predictions the claims table reads ((c) slopes, (d) never hurts)."""


def evaluation_methods(
    methods: Mapping[str, Mapping[str, Any]], evaluation: Mapping[str, Any]
) -> dict[str, list[str]]:
    """Method lists of the evaluation outputs, restricted to the methods that run.

    ``table1``: every method but the no-detach ablations; ``table2``: the Table 2 settings whose detached
    method and at least one of its ablations run (detached ones first, then each variant's); ``masked``: methods with masked test predictions (fusion methods, then comparators);
    ``figure``: Fig. 2's (``evaluation.figure_methods``); ``parachute``: the PARACHUTE tables'
    (``evaluation.parachute_methods``, null = every masked method); ``survival_figures``: the td-AUC,
    calibration and KM figures' (``evaluation.survival_methods``); ``survival``: every method;
    ``claims``: the claims table's (:data:`CLAIM_METHODS` that run, then the Table 2 pairs);
    ``claims_masked``: those of :data:`CLAIM_MASKED_METHODS` with masked predictions.
    """
    masked = (
        methods_of_kind(methods, "fusion")
        + methods_of_kind(methods, "comparator")
        + methods_of_kind(methods, "sksurv")
    )
    pairs = [
        base
        for base, _ in TABLE2_SETTINGS
        if base in methods and any(m in methods for m in table2_methods(base))
    ]
    chosen = evaluation["parachute_methods"]
    table2 = pairs + [
        f"{base}_{suffix}" for suffix, _ in TABLE2_VARIANTS for base in pairs if f"{base}_{suffix}" in methods
    ]
    claims = [m for m in CLAIM_METHODS if m in methods]
    return {
        "table1": [m for m, d in methods.items() if not is_joint(d)],
        "table2": table2,
        "masked": masked,
        "figure": [m for m in evaluation["figure_methods"] if m in masked],
        "parachute": masked if chosen is None else [m for m in chosen if m in masked],
        "survival_figures": [m for m in evaluation["survival_methods"] if m in methods],
        "survival": list(methods),
        "claims": claims + [m for m in table2 if m not in claims],
        "claims_masked": [m for m in CLAIM_MASKED_METHODS if m in masked],
    }


# ---------------------------------------------------------------------------------------------
# which pathology modalities (and Stage 1 models) a run needs


def pathology_needed(methods: Mapping[str, Mapping[str, Any]], available: Sequence[str]) -> list[str]:
    """Pathology modalities some running method uses and the cohort has (their Stage 1 runs).

    A method none of whose modalities the cohort has (e.g. ``tma_clam`` on a download without the TMA
    cores) cannot run: an error naming the method and what is missing, before any job.
    """
    from haf.modalities import PATHOLOGY

    for name, decl in methods.items():
        usable = [m for m in decl["modalities"] if m not in PATHOLOGY or m in available]
        if not usable:
            missing = ", ".join(m for m in decl["modalities"] if m not in available)
            raise HafConfigError(
                f"run_methods: {name} needs {missing}, which this cohort does not have (the folder in "
                f"paths is missing under data_root); remove {name} from run_methods or add the data"
            )
    used = {m for decl in methods.values() for m in decl["modalities"]}
    return [m for m in PATHOLOGY if m in used and m in available]


def stage1_models(methods: Mapping[str, Mapping[str, Any]], needed: Sequence[str]) -> list[str]:
    """Stage 1 models of the run: each needed pathology modality's (fold inputs) and the CLAM baselines'."""
    models = list(needed)
    for decl in methods.values():
        if decl["family"] == "clam" and decl["pathology_model"] not in models:
            models.append(decl["pathology_model"])
    return [m for m in PATHOLOGY_MODELS if m in models]
