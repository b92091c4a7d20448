"""Token-level comparators (``attention_fusion`` / ``mfmf`` with ``tokens: instance``): the instance tokens, the
key padding masks, the masked evaluation's presence mask, stacked == alone, checkpoints and outputs.

The bags are small synthetic h5 bags (``tests/fakes/fusion.py`` ``synthetic_bags``: 3-40 instances of 16-d
features, some carrying the fold inputs' planted signal) so that the token cap (12) both subsamples and
keeps whole bags.
"""

from __future__ import annotations

import copy
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from fakes.config import declare, load_config
from fakes.fusion import synthetic_bags, synthetic_fold_inputs

from haf.comparators.models import AttentionFusion, AttentionFusionTokens, MFMFTokens
from haf.comparators.train import build_model, load_model, run_comparator_folds, train_comparator_folds
from haf.errors import HafConfigError, HafInputError
from haf.mil.tokens import InstanceTokens, instance_tokens_from_stores, subsample_rows
from haf.modalities import MODALITIES
from haf.runtime.stacked import Members, member_state_dict
from haf.runtime.stacked_attention import RowLayers
from haf.runtime.tensors import FoldTensors, StackedFoldTensors, predict_scores, token_keys

CPU = torch.device("cpu")
DIMS = {"wsi": 6, "tma": 6, "cell": 4, "clin": 4, "path": 5, "blood": 4, "icd": 4}
CAP = 12
SECTIONS = load_config(
    {"stage3": dict(hidden=16, dropout=0.25, lr=3e-3, max_epochs=6, es_patience=3, batch_size=32)}
)
SECTIONS = {"stage3": SECTIONS["stage3"], "parachute": SECTIONS["parachute"]}
FAMILIES = ["attention_fusion", "mfmf"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def folds():
    # one cohort (same patients, same bags), three folds: different parts per fold
    return [synthetic_fold_inputs(119, fold=f, n_folds=5, seed=3, dims=DIMS) for f in (0, 1, 2)]


@pytest.fixture(scope="module")
def stores(folds, tmp_path_factory):
    return synthetic_bags(folds[0], tmp_path_factory.mktemp("bags"), dim=16, sizes=(3, 40), seed=5)


@pytest.fixture(scope="module")
def tokens(folds, stores) -> InstanceTokens:
    return instance_tokens_from_stores(stores, folds[0].patient_id, CAP, seed=0)


def _decl(family: str, **extra) -> dict:
    return declare({family: {"family": family, "tokens": "instance", "instance_tokens": CAP, **extra}})[
        family
    ]


def _model(family: str, tokens: InstanceTokens, seed: int = 0, **extra) -> torch.nn.Module:
    torch.manual_seed(seed)
    dims = {**DIMS, **{f"{m}.tokens": d for m, d in tokens.dims().items()}}
    return build_model(_decl(family, **extra), dims, SECTIONS["stage3"]).eval()


# ---------------------------------------------------------------------------------------------
# the subsample


def test_subsample_is_seeded_by_patient_and_modality_only_capped_and_keeps_small_bags(stores, folds):
    a = subsample_rows("017", "wsi", 40, CAP, seed=0)
    assert np.array_equal(a, subsample_rows("017", "wsi", 40, CAP, seed=0))  # reproducible
    assert len(a) == CAP and np.array_equal(a, np.unique(a)) and a.max() < 40  # sorted, distinct rows
    # the documented seeding: SeedSequence([seed, crc32("modality:patient")])
    key = zlib.crc32(b"wsi:017")
    expected = np.sort(np.random.default_rng(np.random.SeedSequence([0, key])).choice(40, CAP, replace=False))
    assert np.array_equal(a, expected)
    assert not np.array_equal(a, subsample_rows("018", "wsi", 40, CAP, seed=0))  # per patient
    assert not np.array_equal(a, subsample_rows("017", "tma", 40, CAP, seed=0))  # per modality
    assert not np.array_equal(a, subsample_rows("017", "wsi", 40, CAP, seed=1))  # instance_seed
    assert np.array_equal(subsample_rows("017", "wsi", 7, CAP, seed=0), np.arange(7))  # fewer: all kept
    assert np.array_equal(subsample_rows("017", "wsi", CAP, CAP, seed=0), np.arange(CAP))
    # over the uniform draw, every row is kept about equally often (cap 3 of 6: 1/2 each)
    hits = np.zeros(6)
    for p in range(2000):
        hits[subsample_rows(f"{p:04d}", "wsi", 6, 3, seed=0)] += 1
    assert np.abs(hits / 2000 - 0.5).max() < 0.05  # binomial SD 0.011


def test_token_table_holds_the_subsampled_bags_and_does_not_depend_on_the_others(stores, folds, tokens):
    pids = list(folds[0].patient_id)
    for m in ("wsi", "tma"):
        sizes = tokens.bag_sizes[m]
        assert (tokens.mask[m].sum(axis=1) == np.minimum(sizes, CAP)).all()
        assert (sizes > CAP).any() and ((sizes > 0) & (sizes < CAP)).any()  # both cases occur
        for i in np.flatnonzero(sizes)[:15]:
            bag = stores[m].read(pids[i])
            rows = subsample_rows(pids[i], m, len(bag), CAP, 0)
            np.testing.assert_array_equal(tokens.x[m][i, : len(rows)], bag[rows])
            assert not tokens.x[m][i, len(rows) :].any()  # zero padding after the real instances
    # another set and order of patients (e.g. one fold's training part only): the same tokens per patient
    train = folds[1].patient_id[folds[1].index("train")][::-1]
    other = instance_tokens_from_stores(stores, train, CAP, seed=0)
    rows = tokens.rows_of(train)
    for m in ("wsi", "tma"):
        n = other.x[m].shape[1]
        np.testing.assert_array_equal(other.x[m], tokens.x[m][rows][:, :n])
    # and every fold's tensors give a patient the same tokens, whatever its part there
    pid = folds[0].patient_id[3]
    parts = {f.part[list(f.patient_id).index(pid)] for f in folds}
    assert len(parts) > 1
    got = []
    for f in folds:
        t = FoldTensors.from_inputs(f, CPU, tokens=tokens)
        x, _ = t.rows(np.array([list(f.patient_id).index(pid)]))
        got.append(x[token_keys("wsi")[0]][x[token_keys("wsi")[2]]])
    for g in got[1:]:
        assert torch.equal(g, got[0])


def test_fold_inputs_that_disagree_with_the_bags_are_named(folds, tokens):
    bad = copy.deepcopy(tokens)
    i = int(np.flatnonzero(folds[0].present[:, 0])[0])
    bad.mask["wsi"][i] = False
    with pytest.raises(HafInputError, match=f"patient {folds[0].patient_id[i]} has wsi"):
        bad.check(folds[0].patient_id, folds[0].present, ["wsi", "clin"])


# ---------------------------------------------------------------------------------------------
# masks


def _batch(folds, tokens, n: int = 24):
    tensors = FoldTensors.from_inputs(folds[0], CPU, tokens=tokens)
    present = folds[0].present
    wsi, tma = present[:, 0], present[:, 1]
    rows = np.concatenate(
        [np.flatnonzero(wsi & tma)[: n - 4], np.flatnonzero(~wsi)[:2], np.flatnonzero(~tma)[:2]]
    )
    return tensors, rows


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_and_absent_modality_tokens_never_change_the_output(family, folds, tokens):
    model = _model(family, tokens)
    tensors, rows = _batch(folds, tokens)
    x, present = tensors.rows(rows)
    base = model(x, present)
    # garbage (huge, inf, NaN) at every padded instance position
    noisy = dict(x)
    for m in ("wsi", "tma"):
        key_x, key_mask, _ = token_keys(m)
        pad = ~x[key_mask]
        assert pad.any()
        values = x[key_x].clone()
        garbage = torch.randn(values.shape) * 1e6
        garbage[..., 0] = float("inf")
        garbage[..., 1] = float("nan")
        values[pad] = garbage[pad]
        noisy[key_x] = values
    assert torch.equal(model(noisy, present), base)
    # a raw call whose absent modality still brings real-looking tokens (every row its own entry, all
    # marked real): present alone keeps them out
    raw = dict(x)
    for m in ("wsi", "tma"):
        key_x, key_mask, key_index = token_keys(m)
        j = MODALITIES.index(m)
        entries = x[key_x][x[key_index]].clone()
        valid = x[key_mask][x[key_index]].clone()
        absent = ~present[:, j]
        entries[absent] = torch.randn(entries[absent].shape) * 1e3
        valid[absent] = True
        raw[key_x], raw[key_mask], raw[key_index] = entries, valid, torch.arange(len(rows))
    assert torch.allclose(model(raw, present), base, rtol=0, atol=1e-6)
    changed = dict(raw)
    absent_rows = ~present[:, 0]
    values = raw[token_keys("wsi")[0]].clone()
    values[absent_rows] = values[absent_rows] * -7 + 3
    changed[token_keys("wsi")[0]] = values
    assert torch.equal(model(changed, present), model(raw, present))
    # a present modality's real tokens do change the output
    real = dict(x)
    values = x[token_keys("wsi")[0]].clone()
    values[x[token_keys("wsi")[1]]] += 1.0
    real[token_keys("wsi")[0]] = values
    assert not torch.allclose(model(real, present), base)
    # gradients are finite and the same with finite garbage at the padding
    finite = dict(x)
    for m in ("wsi", "tma"):
        key_x, key_mask, _ = token_keys(m)
        values = x[key_x].clone()
        values[~x[key_mask]] = 5.0
        finite[key_x] = values
    grads = []
    for inputs in (x, finite):
        model.zero_grad()
        model(inputs, present).sum().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    for k in grads[0]:
        assert torch.isfinite(grads[0][k]).all() and torch.equal(grads[0][k], grads[1][k]), k


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_weights_on_masked_keys_are_exactly_zero(family, folds, tokens):
    """The first attention of the model, recomputed by hand from its inputs: the key mask it is given is the
    real instances of the present modalities (and the tabular/summary or missing tokens), and the weights on
    every other key are exactly 0."""
    model = _model(family, tokens)
    tensors, rows = _batch(folds, tokens)
    x, present = tensors.rows(rows)
    attn = model.blocks[0].attn if family == "attention_fusion" else model.attn
    seen = {}
    attn.register_forward_hook(lambda mod, args, out: seen.update(args=args, out=out))
    model(x, present)
    query, key, value, key_mask = seen["args"]
    inst = {}
    for m in ("wsi", "tma"):
        key_x, key_mask_name, key_index = token_keys(m)
        inst[m] = x[key_mask_name][x[key_index]] & present[:, MODALITIES.index(m), None]
    tab = present[:, 2:]
    if family == "attention_fusion":  # [summary, wsi instances, tma instances, five tabular tokens]
        expected = torch.cat(
            [torch.ones(len(rows), 1, dtype=torch.bool), inst["wsi"], inst["tma"], tab], dim=1
        )
    else:  # [wsi instances, 8 missing tokens (only without wsi)]
        missing = (~present[:, :1]).expand(-1, 8)
        expected = torch.cat([inst["wsi"], missing], dim=1)
    assert torch.equal(key_mask, expected)
    assert (~expected).any(dim=1).float().mean() > 0.3  # many rows have masked keys
    h, d = attn.heads, attn.d // attn.heads
    q = attn.q(query).reshape(*query.shape[:-1], h, d).transpose(-2, -3)
    k = attn.k(key).reshape(*key.shape[:-1], h, d).transpose(-2, -3)
    v = attn.v(value).reshape(*value.shape[:-1], h, d).transpose(-2, -3)
    scores = (q @ k.transpose(-1, -2)) / d**0.5
    weights = torch.softmax(scores.masked_fill(~expected[:, None, None, :], float("-inf")), dim=-1)
    assert (weights.masked_select(~expected[:, None, None, :].expand_as(weights)) == 0).all()
    v = v.masked_fill(~expected[:, None, :, None], 0.0)
    by_hand = attn.out((weights @ v).transpose(-2, -3).flatten(-2))
    torch.testing.assert_close(seen["out"], by_hand, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_masked_evaluations_presence_mask_hides_a_dropped_modalitys_tokens(family, folds, tokens):
    model = _model(family, tokens)
    tensors, rows = _batch(folds, tokens)
    present = torch.as_tensor(folds[0].present[rows])
    dropped = present.clone()
    dropped[::2, 0] = False  # WSI dropped for every other patient (the masked evaluation's mask)
    dropped[1::3, 1] = False  # and TMA for some
    x, mask = tensors.rows(rows, dropped)
    for m in ("wsi", "tma"):  # what reaches the model for a dropped row is the padding entry
        key_x, key_mask, key_index = token_keys(m)
        gone = ~dropped[:, MODALITIES.index(m)]
        assert not x[key_mask][x[key_index][gone]].any()
    score = model(x, mask)
    # the same patients with those modalities removed from the fold inputs and from the tokens
    inp = copy.deepcopy(folds[0])
    removed = copy.deepcopy(tokens)
    order = tokens.rows_of(inp.patient_id[rows])
    for m in ("wsi", "tma"):
        j = MODALITIES.index(m)
        gone = (~dropped[:, j]).numpy()
        inp.present[rows[gone], j] = False
        inp.features[m][rows[gone]] = 0.0
        removed.mask[m][order[gone]] = False
        removed.x[m][order[gone]] = 0.0
    without = FoldTensors.from_inputs(inp, CPU, tokens=removed)
    torch.testing.assert_close(score, model(*without.rows(rows)), rtol=0, atol=1e-6)
    assert not torch.allclose(score, model(*tensors.rows(rows)), atol=1e-4)  # the drop mattered
    # batched prediction (predict_scores, as the masked evaluation calls it) gives the same scores
    np.testing.assert_allclose(
        predict_scores(model, tensors, rows, present=dropped.numpy(), batch_size=7), score.detach().numpy(),
        rtol=0, atol=1e-6,
    )  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_a_stacked_member_is_the_plain_model_and_its_padding_is_not_attended(family, folds, tokens):
    dims = {**DIMS, **{f"{m}.tokens": d for m, d in tokens.dims().items()}}
    members = Members([11, 12])
    layers = RowLayers(members)
    stacked = build_model(
        _decl(family), {k: [v, v] for k, v in dims.items()}, SECTIONS["stage3"], layers
    ).eval()
    st = StackedFoldTensors.from_inputs(folds[:2], CPU, tokens=tokens)
    rows = torch.as_tensor(np.stack([np.arange(20), np.arange(30, 50)]))
    valid = torch.ones(2, 20, dtype=torch.bool)
    out = stacked(*st.rows(rows, valid))
    for k in range(2):
        plain = build_model(_decl(family), dims, SECTIONS["stage3"]).eval()
        plain.load_state_dict(member_state_dict(stacked, k))
        t = FoldTensors.from_inputs(folds[k], CPU, tokens=tokens)
        torch.testing.assert_close(out[k], plain(*t.rows(rows[k].numpy())), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# training, checkpoints, outputs


@pytest.mark.parametrize("family", FAMILIES)
def test_a_fold_stacked_with_others_equals_it_trained_alone(family, folds, tokens):
    decl = _decl(family)
    together = train_comparator_folds(folds, decl, copy.deepcopy(SECTIONS), CPU, tokens=tokens)
    alone = train_comparator_folds(folds[1:2], decl, copy.deepcopy(SECTIONS), CPU, tokens=tokens)[0]
    a, b = together[1].history, alone.history
    assert a["epoch"].tolist() == b["epoch"].tolist()
    pd.testing.assert_frame_equal(a, b, rtol=1e-4, atol=1e-5)
    test = folds[1].index("test")
    pa = predict_scores(together[1].score_fn, together[1].tensors, test)
    pb = predict_scores(alone.score_fn, alone.tensors, test)
    np.testing.assert_allclose(pa, pb, rtol=1e-4, atol=1e-5)
    assert not np.allclose(predict_scores(together[0].score_fn, together[1].tensors, test), pa, atol=1e-3)
    assert isinstance(
        together[1].model, AttentionFusionTokens if family == "attention_fusion" else MFMFTokens
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_outputs_and_checkpoint_round_trip(family, folds, tokens, tmp_path, default_config):
    evaluation = dict(default_config["evaluation"], repeats=2, dropout_p=[0.0, 0.5], parachute_p=[0.3])
    outputs = [
        {k: tmp_path / f"fold_{i}" / name for k, name in
         (("model", "model.pt"), ("predictions", "predictions.tsv"), ("masked", "masked.tsv.gz"),
          ("train_log", "train_log.tsv"))}
        for i in range(2)
    ]  # fmt: skip
    decl = _decl(family)
    preds = run_comparator_folds(
        folds[:2], decl, copy.deepcopy(SECTIONS), evaluation, outputs, method=f"{family}_tokens", device=CPU,
        tokens=tokens,
    )  # fmt: skip
    for i, fold in enumerate(folds[:2]):
        checkpoint = torch.load(outputs[i]["model"], weights_only=False)
        assert checkpoint["dims"]["wsi.tokens"] == 16 and checkpoint["declaration"]["tokens"] == "instance"
        model = load_model(checkpoint)
        test = fold.index("test")
        back = preds[i][preds[i]["part"] == "test"]["risk"].to_numpy()
        tensors = FoldTensors.from_inputs(fold, CPU, tokens=tokens)  # tokens are inputs, not weights
        np.testing.assert_allclose(predict_scores(model, tensors, test), back, rtol=1e-5, atol=1e-6)
        masked = pd.read_csv(outputs[i]["masked"], sep="\t", dtype={"patient_id": str})
        assert {"dropout", "pathology", "tabular", "mixed"} <= set(masked["scenario"])
        # every masked row is the score of the model under the row's kept modalities (each distinct
        # (patient, kept set) is scored once: haf.runtime.outputs)
        kept = np.array([[m in k.split(",") for m in MODALITIES] for k in masked["kept"]])
        j = np.array([int(np.flatnonzero(fold.patient_id == p)[0]) for p in masked["patient_id"]])
        score = predict_scores(model, tensors, j, present=fold.present[j] & kept, batch_size=64)
        np.testing.assert_allclose(masked["risk"].to_numpy(), score, rtol=0, atol=1e-5)
        assert len(masked) > len(np.unique(np.column_stack([j, kept]), axis=0))  # repeated pairs occur
    with pytest.raises(ValueError, match="tokens: instance needs"):
        train_comparator_folds(folds[:1], decl, copy.deepcopy(SECTIONS), CPU)


def test_a_token_model_learns_from_the_instances_alone(tmp_path):
    """Signal only in a few instances of each WSI bag (the fold inputs' vectors are noise): the token model
    finds it on the held-out patients, the slide-level model on the noise vectors cannot."""
    from sklearn.metrics import roc_auc_score

    from haf.artifacts.bags import write_bag
    from haf.mil.bags import BagStore

    inp = synthetic_fold_inputs(240, fold=0, n_folds=4, seed=8, dims=DIMS, availability={"wsi": 1.0})
    rng = np.random.default_rng(0)
    for j, m in enumerate(MODALITIES):
        inp.features[m] = (rng.normal(size=inp.features[m].shape) * inp.present[:, j : j + 1]).astype(
            np.float32
        )
    direction = rng.normal(size=16)
    direction /= np.linalg.norm(direction)
    files = {}
    for i, pid in enumerate(inp.patient_id):  # 3 of 10-30 instances carry +-2 along one direction
        n = int(rng.integers(10, 31))
        bag = rng.normal(size=(n, 16)).astype(np.float32)
        sign = 0.0 if np.isnan(inp.label[i]) else 2 * inp.label[i] - 1
        bag[:3] += (2.0 * sign * direction).astype(np.float32)
        files[pid] = [tmp_path / f"{pid}.h5"]
        write_bag(files[pid][0], rng.permutation(bag), np.zeros((n, 2), dtype=np.int32), {"feature_dim": 16})
    tokens = instance_tokens_from_stores({"wsi": BagStore.from_files(files, name="wsi", dim=16)},
                                         inp.patient_id, CAP, seed=0)  # fmt: skip
    sections = copy.deepcopy(SECTIONS)
    sections["stage3"].update(max_epochs=30, es_patience=10, lr=3e-3)
    scores = {}
    for name, decl, tok in (
        ("tokens", _decl("attention_fusion", modalities=["wsi", "clin"]), tokens),
        ("slide", declare({"a": {"family": "attention_fusion", "modalities": ["wsi", "clin"]}})["a"], None),
    ):
        run = train_comparator_folds([inp], decl, sections, CPU, tokens=tok)[0]
        idx = inp.index("test")
        idx = idx[~np.isnan(inp.label[idx])]
        scores[name] = roc_auc_score(inp.label[idx], predict_scores(run.score_fn, run.tensors, idx))
    # measured: tokens 0.84, slide 0.49
    assert scores["tokens"] > 0.75 and scores["slide"] < 0.65, scores


@pytest.mark.parametrize("family", FAMILIES)
def test_a_run_without_tma_bags_trains_on_the_wsi_tokens(family, folds, stores, tmp_path, default_config):
    # a download without the TMA cores: tma absent for everyone, no TMA bags, no tma token width
    no_tma = []
    for f in folds[:2]:
        f = copy.deepcopy(f)
        f.present[:, 1] = False
        f.features["tma"][:] = 0.0
        no_tma.append(f)
    tokens = instance_tokens_from_stores({"wsi": stores["wsi"]}, folds[0].patient_id, CAP, seed=0)
    runs = train_comparator_folds(no_tma, _decl(family), copy.deepcopy(SECTIONS), CPU, tokens=tokens)
    assert "tma.tokens" not in runs[0].checkpoint["dims"]
    model = load_model(runs[0].checkpoint)
    test = no_tma[0].index("test")
    tensors = FoldTensors.from_inputs(no_tma[0], CPU, tokens=tokens)
    np.testing.assert_allclose(
        predict_scores(model, tensors, test),
        predict_scores(runs[0].score_fn, runs[0].tensors, test),
        atol=1e-6,
    )
    with pytest.raises(HafInputError, match="has tma in the fold inputs but no tma instance tokens"):
        train_comparator_folds(folds[:1], _decl(family), copy.deepcopy(SECTIONS), CPU, tokens=tokens)


# ---------------------------------------------------------------------------------------------
# declarations and the slide-level variants


def test_token_declarations_are_checked():
    with pytest.raises(HafConfigError, match="late_fusion"):
        declare({"x": {"family": "late_fusion", "tokens": "instance"}})
    with pytest.raises(HafConfigError, match="wsi/tma bags"):
        declare({"x": {"family": "attention_fusion", "tokens": "instance", "modalities": ["clin", "path"]}})
    with pytest.raises(HafConfigError, match="must be wsi or tma"):
        declare({"x": {"family": "mfmf", "tokens": "instance", "value_modality": "clin"}})
    methods = load_config()["methods"]
    assert methods["attention_fusion_tokens"]["tokens"] == "instance" == methods["mfmf_tokens"]["tokens"]
    assert methods["attention_fusion"]["tokens"] == "modality" == methods["mfmf"]["tokens"]


def test_the_slide_level_declarations_build_the_slide_level_models(folds):
    decl = declare({"attention_fusion": {"family": "attention_fusion"}})["attention_fusion"]
    torch.manual_seed(0)
    model = build_model(decl, DIMS, SECTIONS["stage3"])
    assert type(model) is AttentionFusion
    legacy = {k: v for k, v in decl.items() if k not in ("tokens", "instance_tokens", "instance_seed")}
    torch.manual_seed(0)
    old = build_model(legacy, DIMS, SECTIONS["stage3"])  # a checkpoint saved before the keys
    torch.testing.assert_close(model.state_dict(), old.state_dict(), rtol=0, atol=0)
    run = train_comparator_folds(folds[:1], decl, {**SECTIONS, "stage3": {**SECTIONS["stage3"], "max_epochs": 1}},
                                 CPU)[0]  # fmt: skip
    assert set(run.checkpoint["dims"]) == set(MODALITIES) and run.tensors.tokens is None
