"""Every registry equals the schema's enum of what it registers, and every typed section its schema section.

One registry per axis (encoders: tests/test_extract_registry.py): a name the schema accepts but the code
does not know would fail at run time, a name the code knows but the schema rejects could never be used.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from haf.alignment.losses import ALIGNMENTS
from haf.cohort.folds import FOLD_SCHEMES, fold_ids
from haf.errors import HafConfigError
from haf.eval.masking import PARACHUTE_SCENARIOS, SCENARIOS
from haf.methods import (
    COMPARATOR_FAMILIES,
    METHOD_FAMILIES,
    TASK_LOSSES,
    TOKEN_FAMILIES,
    TOKEN_MODES,
    resolve,
)
from haf.modalities import MODALITIES, PATHOLOGY_MODELS
from haf.settings import SECTIONS, CVSettings, Stage1Settings

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
METHOD = SCHEMA["$defs"]["method"]["properties"]


def _enum(prop: dict) -> list[str]:
    if "enum" in prop:
        return prop["enum"]
    if "items" in prop:
        return _enum(prop["items"])
    return _enum(next(p for p in prop.get("allOf", []) if "enum" in p or "$ref" in p))


@pytest.mark.parametrize(
    "schema_enum, registry",
    [
        (METHOD["family"]["enum"], list(METHOD_FAMILIES)),
        (METHOD["align"]["enum"], ["none", *ALIGNMENTS]),
        (METHOD["task_loss"]["enum"], list(TASK_LOSSES)),
        (METHOD["tokens"]["enum"], list(TOKEN_MODES)),
        (METHOD["pathology_model"]["enum"], list(PATHOLOGY_MODELS)),
        (SCHEMA["$defs"]["modality"]["enum"], list(MODALITIES)),
        (SCHEMA["properties"]["cv"]["properties"]["scheme"]["enum"], list(FOLD_SCHEMES)),
        (
            _enum(SCHEMA["properties"]["evaluation"]["properties"]["parachute_scenarios"]),
            list(PARACHUTE_SCENARIOS),
        ),
    ],
    ids=["method families", "alignments", "task losses", "token modes", "pathology models", "modalities", "fold schemes",
         "masking scenarios"],
)  # fmt: skip
def test_schema_enum_equals_registry(schema_enum, registry):
    assert sorted(schema_enum) == sorted(registry)


def test_every_scenario_but_figure_2s_dropout_is_a_parachute_scenario():
    assert set(SCENARIOS) == {"dropout", *PARACHUTE_SCENARIOS}


def test_every_comparator_family_resolves_to_its_builder_and_step():
    for name in COMPARATOR_FAMILIES:
        family = METHOD_FAMILIES[name]
        assert callable(resolve(family.build)) and callable(resolve(family.step)), name
        assert family.section in SECTIONS


def test_every_token_family_is_a_comparator_with_a_token_level_builder():
    from haf.comparators.builders import instance_tokens

    assert set(TOKEN_FAMILIES) <= set(COMPARATOR_FAMILIES)
    assert not instance_tokens({"family": "mfmf"})  # a declaration saved before the key: slide level
    assert METHOD["tokens"]["default"] == "modality"


def test_every_sksurv_family_resolves_to_its_fit_function():
    from haf.methods import SKSURV_FAMILIES

    assert SKSURV_FAMILIES == ("sksurv",)
    for name in SKSURV_FAMILIES:
        family = METHOD_FAMILIES[name]
        assert callable(resolve(family.fit)) and family.section in SECTIONS and family.task_loss == "cox"
        assert family.build is None and family.step is None  # not trained by the stacked comparator loop


def test_every_typed_section_mirrors_its_schema_section():
    for name, cls in SECTIONS.items():
        schema_keys = set(SCHEMA["properties"][name]["properties"])
        assert {f.name for f in fields(cls)} == schema_keys, name


def test_sections_are_strict_both_ways(default_config):
    raw = dict(default_config["stage1"])
    assert Stage1Settings.from_config(raw).d1 == raw["d1"]
    with pytest.raises(HafConfigError, match=r"stage1\.lrr: not a setting"):
        Stage1Settings.from_config({**raw, "lrr": 1e-3})
    del raw["d1"]
    with pytest.raises(HafConfigError, match=r"stage1\.d1: missing"):
        Stage1Settings.from_config(raw)


def test_fold_ids_follow_the_scheme(default_config):
    cv = dict(default_config["cv"], k=4)
    assert fold_ids(CVSettings.from_config(cv)) == [0, 1, 2, 3]
    for scheme in ("official_in", "official_out", "oropharynx"):
        assert fold_ids(CVSettings.from_config(dict(cv, scheme=scheme))) == [0]
        assert FOLD_SCHEMES[scheme].split_file.endswith(".json")


def test_per_p_declarations_are_checked_and_grouped():
    from fakes.config import declare

    from haf.methods import per_p_models

    decls = declare({
        "parachute": {"family": "parachute"},
        "parachute_p30": {"family": "parachute", "p_miss": 0.3, "per_p_of": "parachute"},
        "parachute_p05": {"family": "parachute", "p_miss": 0.05, "per_p_of": "parachute"},
        "other": {"family": "parachute", "p_miss": 0.15},  # a p_miss of its own, no per-p protocol
    })  # fmt: skip
    assert per_p_models(decls) == {"parachute": {0.05: "parachute_p05", 0.3: "parachute_p30"}}
    with pytest.raises(HafConfigError, match=r"methods\.ga\.p_miss: only the parachute family"):
        declare({"ga": {"family": "fusion", "align": "ga", "p_miss": 0.1}})
    with pytest.raises(HafConfigError, match=r"methods\.late\.per_p_of: only the parachute family"):
        declare({"late": {"family": "late_fusion", "per_p_of": "parachute"}})
    with pytest.raises(
        HafConfigError, match=r"methods\.x\.per_p_of: 'parachute': a per-p model needs its own p_miss > 0"
    ):
        declare({"x": {"family": "parachute", "per_p_of": "parachute"}})
    with pytest.raises(HafConfigError, match="names the method itself"):
        declare({"x": {"family": "parachute", "p_miss": 0.1, "per_p_of": "x"}})
    with pytest.raises(
        HafConfigError, match=r"methods\.b and methods\.a are both per_p_of 'parachute' at p_miss 0\.3"
    ):
        per_p_models(declare({
            "a": {"family": "parachute", "p_miss": 0.3, "per_p_of": "parachute"},
            "b": {"family": "parachute", "p_miss": 0.30, "per_p_of": "parachute"},
        }))  # fmt: skip


def test_the_shipped_per_p_methods_cover_the_protocols_p(default_config):
    from haf.methods import method_declaration, per_p_models

    decls = {n: method_declaration(n, d) for n, d in default_config["methods"].items()}
    groups = per_p_models(decls)
    assert list(groups) == ["parachute"]
    assert sorted(groups["parachute"]) == sorted(default_config["evaluation"]["parachute_p"])
    for name in groups["parachute"].values():  # the same model and settings as parachute, p_miss aside
        same = {k: v for k, v in decls[name].items() if k not in ("label", "p_miss", "per_p_of")}
        assert same == {
            k: v for k, v in decls["parachute"].items() if k not in ("label", "p_miss", "per_p_of")
        }
