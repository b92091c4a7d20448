"""The selected-epochs table and the small-validation flag (haf.eval.epochs, Table 1): hand-made training
logs and predictions whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from haf.artifacts.predictions import make_predictions
from haf.artifacts.train_log import write_train_log
from haf.errors import HafInputError
from haf.eval.epochs import (
    TrainedModel,
    prediction_val_counts,
    selected_epochs,
    selected_epochs_markdown,
)


def _log(path, n_epochs: int, kept: int) -> str:
    epochs = np.arange(n_epochs)
    write_train_log(
        path,
        pd.DataFrame(
            dict(
                epoch=epochs,
                train_loss=1.0 - 0.01 * epochs,
                val_loss=0.7 + 0.001 * epochs,
                val_score=0.5 + 0.01 * epochs,
                lr=1e-4,
                best=epochs == kept,
            )
        ),
    )
    return str(path)


def _predictions(method: str, per_fold: dict[int, tuple[int, int]], cox: bool = False) -> pd.DataFrame:
    """Per fold (labelled, unlabelled) validation patients, and two labelled test patients (0 and 1)."""
    frames = []
    for fold, (labelled, unlabelled) in per_fold.items():
        n = labelled + unlabelled + 2
        label = np.r_[np.arange(labelled) % 2, np.full(unlabelled, np.nan), 0.0, 1.0]
        risk = np.linspace(-1, 1, n)
        frames.append(
            make_predictions(
                method=method,
                seed=0,
                fold=fold,
                part=np.array(["val"] * (n - 2) + ["test"] * 2),
                # the same two test patients for every method, unique over folds
                patient_id=np.array([f"{fold * 100 + i:03d}" for i in [*range(n - 2), 98, 99]]),
                risk=risk,
                prob=None if cox else 1 / (1 + np.exp(-risk)),
                label=label,
                time=np.full(n, 100.0),
                event=np.ones(n),
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_validation_counts_follow_the_loss():
    preds = _predictions("m", {0: (25, 2), 1: (3, 10)})
    bce = prediction_val_counts(preds, [0, 1, 2], "bce")
    assert bce.to_dict("list") == {
        "fold": [0, 1, 2],
        "n_val": [27, 13, 0],  # fold 2 has no validation prediction: 0
        "n_val_labelled": [25, 3, 0],
        "n_val_usable": [25, 3, 0],  # a binary loss uses the labelled patients
    }
    cox = prediction_val_counts(preds, [0, 1], "cox")
    assert cox["n_val_usable"].tolist() == [27, 13]  # a Cox loss uses every validation patient
    with pytest.raises(ValueError, match="task_loss"):
        prediction_val_counts(preds, [0], "mse")


def test_selected_epochs_table_by_hand(tmp_path):
    logs_a = {
        0: _log(tmp_path / "a0.tsv", 4, 0),  # kept epoch 0 (an untrained model)
        1: _log(tmp_path / "a1.tsv", 10, 7),
        2: _log(tmp_path / "a2.tsv", 5, 3),
    }
    logs_b = {f: _log(tmp_path / f"b{f}.tsv", 20, 12) for f in range(3)}
    a_counts = prediction_val_counts(
        _predictions("a", {0: (25, 2), 1: (3, 10), 2: (12, 0)}), [0, 1, 2], "bce"
    )
    b_counts = prediction_val_counts(
        _predictions("b", {0: (3, 10), 1: (3, 10), 2: (3, 10)}, cox=True), [0, 1, 2], "cox"
    )
    models = [
        TrainedModel("a", "A", "Stage 3", logs_a, a_counts),
        TrainedModel("b", "B", "comparator", logs_b, b_counts, usable="all (Cox)"),
    ]
    summary, per_fold = selected_epochs(
        models, repeats={0: 0, 1: 0, 2: 1}, min_val_patients=10, early_epoch=5
    )
    a = summary.set_index("model").loc["a"]
    assert (a["kept_epoch_min"], a["kept_epoch_median"], a["kept_epoch_max"]) == (0, 3.0, 7)
    assert a["early_folds"] == 2  # epochs 0 and 3 are <= 5
    assert (a["epochs_trained_median"], a["epochs_trained_max"]) == (5.0, 10)
    assert (a["val_usable_min"], a["val_usable_median"]) == (3.0, 12.0)
    assert a["small_val_folds"] == 1 and a["n_folds"] == 3 and a["n_cv_repeats"] == 2
    b = summary.set_index("model").loc["b"]
    assert b["early_folds"] == 0 and b["kept_epoch_median"] == 12.0
    # 3 labelled of 13: a Cox model's validation C-index uses all 13 (>= 10), so it is not flagged
    assert b["small_val_folds"] == 0 and b["val_usable_min"] == 13.0 and b["val_labelled_min"] == 3.0
    flagged = per_fold.loc[per_fold["small_val"], ["model", "fold"]].values.tolist()
    assert flagged == [["a", 1]]  # exactly that model and fold
    assert per_fold.loc[per_fold["early"], ["model", "fold"]].values.tolist() == [["a", 0], ["a", 2]]
    assert per_fold.set_index(["model", "fold"]).loc[("a", 1), "kept_val_score"] == pytest.approx(0.57)
    assert per_fold["cv_repeat"].tolist() == [0, 0, 1, 0, 0, 1]
    md = selected_epochs_markdown(
        summary,
        title="T",
        early_epoch=5,
        min_val_patients=10,
        selection="best",
        n_repeats=2,
        k=2,
        sksurv=["coxph"],
    )
    assert "| A | Stage 3 | 3 | 0 / 3 / 7 | 2 | 5 / 10 | 3 / 12 (labelled) | 1 † |" in md
    assert "| B | comparator | 3 | 12 / 12 / 12 | 0 | 20 / 20 | 13 / 13 (all (Cox)) | 0 |" in md
    assert "Flagged: A (1 of 3 folds)." in md and "fewer than 10 usable" in md
    assert "Folds kept <= 5" in md and "coxph" in md


@pytest.mark.parametrize(
    "content, field",
    [
        ("epoch\ttrain_loss\tval_loss\tval_score\tlr\n0\t1\t1\t0.5\t0.1\n", "best"),  # no best column
        ("epoch\ttrain_loss\tval_loss\tval_score\tlr\tbest\n0\t1\t1\t0.5\t0.1\tFalse\n", "best"),  # none kept
        ("epoch\ttrain_loss\tval_loss\tval_score\tlr\tbest\nx\t1\t1\t0.5\t0.1\tTrue\n", "epoch"),
        ("", None),  # empty file
    ],
)
def test_a_malformed_train_log_names_the_file(tmp_path, content, field):
    bad = tmp_path / "methods" / "m" / "fold_1" / "train_log.tsv"
    bad.parent.mkdir(parents=True)
    bad.write_text(content)
    good = {0: _log(tmp_path / "ok.tsv", 3, 1), 1: str(bad)}
    counts = pd.DataFrame(dict(fold=[0, 1], n_val=[5, 5], n_val_labelled=[5, 5], n_val_usable=[5, 5]))
    with pytest.raises(HafInputError) as err:
        selected_epochs(
            [TrainedModel("m", "M", "s", good, counts)], repeats=None, min_val_patients=1, early_epoch=5
        )
    assert str(bad) in str(err.value)
    if field:
        assert field in str(err.value)


def test_a_missing_train_log_names_the_file(tmp_path):
    missing = tmp_path / "stage1" / "wsi" / "fold_0" / "train_log.tsv"
    counts = pd.DataFrame(dict(fold=[0], n_val=[5], n_val_labelled=[5], n_val_usable=[5]))
    with pytest.raises(HafInputError, match="stage1/wsi/fold_0/train_log.tsv"):
        selected_epochs(
            [TrainedModel("stage1/wsi", "W", "s", {0: str(missing)}, counts)],
            repeats=None,
            min_val_patients=1,
            early_epoch=5,
        )


def test_table1_flags_exactly_the_small_validation_folds(tmp_path):
    from fakes.config import declare, load_config

    from haf.eval.tables import TABLE1_COLUMNS, build_table1, small_val_display

    config = load_config()
    methods = declare({m: config["methods"][m] for m in ("haf", "fusion_mlp_all", "parachute")})
    preds = pd.concat(
        [
            _predictions("haf", {0: (12, 1), 1: (4, 9), 2: (12, 0)}),  # fold 1: 4 labelled < 10
            _predictions("fusion_mlp_all", {0: (12, 0), 1: (12, 0), 2: (10, 0)}),  # 10 is not below 10
            _predictions("parachute", {0: (4, 9), 1: (4, 9), 2: (4, 9)}, cox=True),  # Cox: 13 usable
        ],
        ignore_index=True,
    )
    result = build_table1(preds, methods, rule="fixed", n_boot=20, seed=0, min_val_patients=10)
    table = result.table.set_index("method")
    assert table["small_val_folds"].to_dict() == {"haf": 1, "fusion_mlp_all": 0, "parachute": 0}
    flagged = result.per_fold.loc[result.per_fold["small_val"], ["method", "fold"]].values.tolist()
    assert flagged == [["haf", 1]]
    assert result.per_fold.set_index(["method", "fold"]).loc[("haf", 1), "n_val_usable"] == 4
    shown, columns, notes = small_val_display(result.table, TABLE1_COLUMNS, 10)
    assert columns["small_val"] == "Small val. folds"
    assert shown.set_index("method")["small_val"].to_dict() == {
        "haf": "1 †",
        "fusion_mlp_all": "0",
        "parachute": "0",
    }
    haf_label = methods["haf"]["label"]
    assert notes and f"Flagged: {haf_label} (1 of 3 folds)." in notes[0]
    # without a minimum the table has no flag (as before)
    plain = build_table1(preds, methods, rule="fixed", n_boot=20, seed=0)
    assert (
        "small_val_folds" not in plain.table and small_val_display(plain.table, TABLE1_COLUMNS, None)[2] == []
    )
