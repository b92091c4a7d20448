#!/usr/bin/env python3
"""Triage of the mutants that survive tools/mutation.sh: rebuild the tables of docs/mutation.md.

Every surviving mutant needs a reason here (why it is equivalent: no observable difference for any input
the module's callers pass) or a test that kills it.  Run after tools/mutation.sh:

    python tools/mutation_triage.py            # rewrite the tables in docs/mutation.md
    python tools/mutation_triage.py --check    # exit 1 if a survivor has no reason (listed on stderr)

Reasons are keyed by mutmut's mutant name (``<function>__mutmut_<n>``; a bare ``<n>`` where that number is
unique in the module).  mutmut numbers mutants per function in source order, so an edit of a function
renumbers its mutants: rerun, and re-key the reasons of that function.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "mutation"
DOC = ROOT / "docs" / "mutation.md"
MODULES = [
    "losses",
    "alignment",
    "clam",
    "mofe",
    "scores",
    "survival",
    "binary",
    "masking",
    "targets",
    "gcs",
    "tabular",
]

REASONS = {
    "losses": {
        8: "`time` is only compared (`>=`, `==`), never mixed into arithmetic: its dtype cannot change a value",
        50: "bool `tied` times a float `event` promotes to float: same values",
        63: "`d` is 0 or 1 only where `rank` is 0 (an event without ties) or the row is censored (term multiplied by event 0, denominator still >= its own hazard > 0): no value changes",
        67: "`order` is only compared (`<`): int64 or float order gives the same comparisons",
        70: "`order` is only compared (`<`): int64 or float order gives the same comparisons",
        74: "bool comparison times float `tied` promotes to float: same values",
    },
    "alignment": {
        "_observed_groups__mutmut_10": "`argsort` default `dim=-1` is dim 1 of the 2-D mask",
        "_observed_groups__mutmut_11": "unstable sort of 0/1 keys over 7 slots: torch's CPU sort returns the stable order (the slot-order test passes); and L_SV, q1 and L_GA are invariant to the order of a patient's columns",
        "_observed_groups__mutmut_12": "argsort of the bool mask orders False before True exactly like the int8 cast",
        "_observed_groups__mutmut_15": "as mutant 11: unstable sort, same order on CPU, and the loss is invariant to column order",
        "_observed_groups__mutmut_26": "`as_tuple=False` is `nonzero`'s default",
        "_dominant_direction__mutmut_13": "einsum subscripts are case-insensitive labels: same contraction",
        "_dominant_direction__mutmut_34": "`F.normalize` default `dim=1`",
        "_dominant_direction__mutmut_35": "`sign` is +-1 after the zero guard, so `q / sign == q * sign`",
        "_global_alignment_loss__mutmut_13": "`transpose(2, 2)` is a no-op: the singular values of U^T and U are the same",
    },
    "clam": {
        15: "the default mask is converted to bool on the next line (`mask.to(dtype=torch.bool)`)",
        19: "the default mask is converted to bool on the next line (`mask.to(dtype=torch.bool)`)",
        54: "`h_valid` is 2-D, so `shape[+1] == shape[-1]`",
        93: "einsum subscripts are case-insensitive labels: same contraction",
        97: "`classifier(z)` is (B, 1): `squeeze(1) == squeeze(-1)`",
        21: "adds -0.0 instead of +0.0 times a finite sum: the same zeros and the same (zero) gradient",
        32: "`topk` default `dim=-1` is dim 1 of the 2-D scores",
        43: "`topk` default `dim=-1` is dim 1 of the 2-D scores",
        167: "int divisor: true division promotes to float, same values",
        171: "`2 * k` is >= 2 whenever k >= 1; for k = 0 the numerator is 0 either way",
        4: "`clam_loss` only sums the mask (`mask.sum(dim=1) > 0`, same for 0/1 ints) and `instance_loss` casts it to bool itself",
        59: "bool weights multiply and sum to the same float values",
    },
    "mofe": {
        2: "a bool mask times float `u` and `torch.cat` with the float block promote to float: same head input",
        25: "`n_subsets` (int) times the float draw promotes to float: same product",
        27: "`n_subsets` is 0 or -1 only for patients with fewer than 2 slots, whose draw is discarded (`has` False)",
        29: "the clamp never binds: draw < 1 gives draw * n < n for n <= 126 in float32 (126 * (1 - 2^-24) -> 125 after `.long()`), so raising its bound changes nothing",
        31: "`n_subsets - 1` is 0 only for patients with fewer than 2 slots, whose draw is discarded",
        24: "`ties='breslow'` is `cox_partial_likelihood`'s default",
    },
    "scores": {
        8: "sklearn's `roc_auc_score` converts the scores to float itself",
        10: "sklearn's `roc_auc_score` converts the scores to float itself",
        14: "with two or more labelled patients of one class sklearn (1.9) returns NaN itself, the value the guard returns",
        19: "scikit-survival converts integer times to float itself (checked: same C for int and float times)",
        21: "scikit-survival converts integer times to float itself (checked: same C for int and float times)",
        23: "scikit-survival converts the risk to float itself",
        25: "scikit-survival converts the risk to float itself",
    },
}

FLOATCONV = "a float conversion of an input every caller passes as numbers already; numpy/pandas/scikit-survival give the same values without it (integer times are checked in test_survival_metrics_take_plain_lists_with_integer_events)"
BOOLCONV = "a bool conversion of 0/1 events: scikit-survival converts them itself and numpy `&`/`.any()` give the same result on 0/1 integers (checked with integer events)"
REASONS["survival"] = {
    6: BOOLCONV,
    8: BOOLCONV,
    10: FLOATCONV,
    12: FLOATCONV,
    "_uno_c__mutmut_3": BOOLCONV,
    "_uno_c__mutmut_5": BOOLCONV,
    "_uno_c__mutmut_7": "the guard is a shortcut: without an event before tau scikit-survival raises 'all samples are censored' (checked), which is caught and gives the same NaN",
    "_uno_c__mutmut_9": "an event exactly at tau is cut by scikit-survival's own `time < tau` mask; if it was the only one, sksurv raises and the NaN is the same",
    "_uno_c__mutmut_34": FLOATCONV,
    "_uno_c__mutmut_36": FLOATCONV,
    "_follow_up_window__mutmut_3": FLOATCONV,
    "_follow_up_window__mutmut_5": FLOATCONV,
    "_follow_up_window__mutmut_8": FLOATCONV,
    "_follow_up_window__mutmut_10": FLOATCONV,
    "_clamp_times__mutmut_4": FLOATCONV,
    "_clamp_times__mutmut_6": FLOATCONV,
    "_event_time_grid__mutmut_3": FLOATCONV,
    "_event_time_grid__mutmut_5": FLOATCONV,
    "_td_auc__mutmut_3": FLOATCONV,
    "_td_auc__mutmut_5": FLOATCONV,
    "_td_auc__mutmut_15": FLOATCONV,
    "_td_auc__mutmut_17": FLOATCONV,
    "_td_auc__mutmut_21": BOOLCONV,
    "_td_auc__mutmut_23": BOOLCONV,
    "_td_auc__mutmut_54": FLOATCONV,
    "_td_auc__mutmut_56": FLOATCONV,
    "_td_auc__mutmut_72": "scikit-survival returns a float array already",
    "_td_auc__mutmut_74": "scikit-survival returns a float array already",
    "_breslow_event_probability__mutmut_3": FLOATCONV,
    "_breslow_event_probability__mutmut_5": FLOATCONV,
    "_breslow_event_probability__mutmut_8": BOOLCONV,
    "_breslow_event_probability__mutmut_10": BOOLCONV,
    "_breslow_event_probability__mutmut_22": FLOATCONV,
    "_breslow_event_probability__mutmut_24": FLOATCONV,
    "_breslow_event_probability__mutmut_39": FLOATCONV,
    "_breslow_event_probability__mutmut_41": FLOATCONV,
    "_km_event_fraction__mutmut_3": FLOATCONV,
    "_km_event_fraction__mutmut_5": FLOATCONV,
    "_calibration_bins__mutmut_3": FLOATCONV,
    "_calibration_bins__mutmut_5": FLOATCONV,
    "_calibration_bins__mutmut_12": "float bin numbers compare equal to the integer bin index (`bins == b`)",
    "_calibration_bins__mutmut_17": "ranks are positive, so `.astype(int)` of the true quotient floors it exactly like `//`",
    "_calibration_bins__mutmut_21": "`(rank - 1) * n_bins // n <= n_bins - 1` always (rank <= n): the `minimum` never binds",
    "_brier_at__mutmut_24": FLOATCONV,
    "_brier_at__mutmut_26": FLOATCONV,
    "_km_curve__mutmut_24": FLOATCONV,
    "_km_curve__mutmut_26": FLOATCONV,
    "_logrank__mutmut_8": BOOLCONV,
    "_logrank__mutmut_10": BOOLCONV,
}
INTCONV = "a dtype conversion of values that are already 0/1 or float in every caller's frame; the metric (sklearn / numpy comparisons) gives the same value"
REASONS["binary"] = {
    "ǁThresholdǁpredict__mutmut_2": INTCONV,
    "__balanced_accuracy__mutmut_6": INTCONV,
    "__balanced_accuracy__mutmut_7": INTCONV,
    "_choose_threshold__mutmut_7": INTCONV,
    "_choose_threshold__mutmut_56": INTCONV,
    "_choose_threshold__mutmut_94": INTCONV,
    "_choose_threshold__mutmut_95": "candidates are midpoints between distinct risks, so no risk equals a cut; with one distinct risk the cut is that risk and `>=`/`>` give all-1/all-0, both balanced accuracy 0.5, and the same cut value",
    "_choose_threshold__mutmut_105": "balanced accuracies of one validation part differ by at least 1 / (2 n_pos n_neg) when they differ: below atol 1e-8 only with n_pos n_neg > 5e7 (a validation part of > 14,000 patients; HANCOCK has 763)",
    "_fold_thresholds__mutmut_5": "the thresholds go into a dict keyed by fold: iteration order does not matter",
    "_fold_thresholds__mutmut_7": "the thresholds go into a dict keyed by fold: iteration order does not matter",
    "_fold_thresholds__mutmut_10": "the thresholds go into a dict keyed by fold: iteration order does not matter",
    "_fold_thresholds__mutmut_25": "`rows` holds one method: every row's `method` is the same",
    "_fold_metrics__mutmut_10": "`sort=True` is `groupby`'s default",
    "_fold_metrics__mutmut_67": "`rows` holds one method: every row's `method` is the same",
    "_pooled_oof__mutmut_63": "`rows` holds one method: every row's `method` is the same",
    "_pooled_oof__mutmut_8": "the pooled table is sorted by patient id before it is returned: part order does not matter",
    "_pooled_oof__mutmut_10": "the pooled table is sorted by patient id before it is returned: part order does not matter",
    "_pooled_oof__mutmut_13": "the pooled table is sorted by patient id before it is returned: part order does not matter",
    "_pooled_oof__mutmut_48": "the index is reset again by the final `sort_values(..., ignore_index=True)`",
    "_pooled_oof__mutmut_50": "the index is reset again by the final `sort_values(..., ignore_index=True)`",
    "_pooled_oof__mutmut_51": "the index is reset again by the final `sort_values(..., ignore_index=True)`",
    "_summarise_folds__mutmut_3": INTCONV,
    "_summarise_folds__mutmut_9": "the mean of an empty array is NaN in numpy too (with a warning): same value",
    "_summarise_folds__mutmut_16": "`std(ddof=1)` of one value is NaN in numpy too (with a warning): same value",
    "_summarise_folds__mutmut_20": "`std(ddof=1)` of one value is NaN in numpy too (with a warning): same value",
    "_batched_auc__mutmut_46": "assigning None into a float array stores NaN",
    "_batched_auc__mutmut_47": "a one-class row already gives 0/0 = NaN (its rank sum is exactly n_pos (n_pos + 1) / 2), so the mask only restates it",
    "_bootstrap_indices__mutmut_4": "`integers(n)` draws from [0, n) like `integers(0, n)`",
}
for key in (
    "_binary_metrics__mutmut_3",
    "_binary_metrics__mutmut_5",
    "_binary_metrics__mutmut_10",
    "_binary_metrics__mutmut_12",
    "_binary_metrics__mutmut_16",
    "_binary_metrics__mutmut_18",
    "_fold_metrics__mutmut_23",
    "_fold_metrics__mutmut_33",
    "_pooled_oof__mutmut_39",
    "_batched_auc__mutmut_4",
    "_batched_auc__mutmut_6",
    "_batched_auc__mutmut_10",
    "_batched_auc__mutmut_12",
    "__resampled__mutmut_2",
    "__resampled__mutmut_6",
    "__resampled__mutmut_10",
    "_bootstrap_ci__mutmut_9",
    "_bootstrap_ci__mutmut_12",
    "_bootstrap_ci__mutmut_15",
    "_paired_bootstrap__mutmut_62",
    "_paired_bootstrap__mutmut_65",
    "_paired_bootstrap__mutmut_68",
    "_paired_bootstrap__mutmut_78",
    "_paired_bootstrap__mutmut_81",
    "_paired_bootstrap__mutmut_84",
):
    REASONS["binary"][key] = INTCONV
REASONS["masking"] = {
    "_draw_masks__mutmut_13": "a 0/1 integer mask gives the same masks: `&` with bools and `~` on 0/1 then `&` with the 0/1 mask reproduce the bool result (checked: test_mask_draws_follow_the_documented_seed_and_rule)",
    "_draw_masks__mutmut_15": "as mutant 13",
    "_draw_masks__mutmut_49": "`rng.random()` equals p with probability ~2^-53: `<` and `<=` draw the same masks",
    "_masked_prediction_table__mutmut_5": "string ids become an object column in the DataFrame either way",
    "_masked_prediction_table__mutmut_7": "string ids become an object column in the DataFrame either way",
    "_masked_prediction_table__mutmut_91": "with prob None the mutant stores `np.asarray(None, float)`, a 0-d NaN that the DataFrame broadcasts: the same all-NaN float column",
}
for key in (
    "_masked_prediction_table__mutmut_42",
    "_masked_prediction_table__mutmut_44",
    "_masked_prediction_table__mutmut_54",
    "_masked_prediction_table__mutmut_56",
    "_masked_prediction_table__mutmut_86",
    "_masked_prediction_table__mutmut_88",
    "_masked_prediction_table__mutmut_99",
    "_masked_prediction_table__mutmut_101",
):
    REASONS["masking"][key] = "the predictor returns float arrays; the conversion is a no-op for them"
REASONS["targets"] = {
    "_build_targets__mutmut_100": "the label column is built from 1.0 / 0.0 / NaN, so it is float64 already",
    "_read_targets__mutmut_4": "label reasons are fixed words (`living`, `deceased`, ...) that pandas never reads as NA: the column is strings either way",
    "_read_targets__mutmut_8": "label reasons are fixed words that pandas never reads as NA: the column is strings either way",
    "_read_targets__mutmut_10": "label reasons are fixed words that pandas never reads as NA: the column is strings either way",
    "_read_targets__mutmut_11": "label reasons are fixed words that pandas never reads as NA: the column is strings either way",
    "_read_targets__mutmut_17": "build_targets writes the label as floats (and NaN), which pandas reads back as float64",
    "_read_targets__mutmut_23": "build_targets writes the time as floats (`1825.0`), which pandas reads back as float64",
}
STRICTR = "`zip(strict=...)`: both sequences are built from the same parameter list, so they always have equal length"
REASONS["gcs"] = {
    "_rademacher__mutmut_6": "`device=None` is the CPU default, where the CPU generator draws anyway",
    "_rademacher__mutmut_11": "`device` omitted is the CPU default, where the CPU generator draws anyway",
    "_rademacher__mutmut_7": "`randint(2, shape)` means high=2, the same [0, 2) as `randint(0, 2, shape)`",
    "_hutchinson_curvature__mutmut_5": "r is +-1, so `epsilon / r == epsilon * r` exactly",
    "_hutchinson_curvature__mutmut_9": "r is +-1, so `epsilon / r == epsilon * r` exactly",
    "_controller__mutmut_9": "for one sample the population SD is 0, the same as the `new_zeros(())` branch",
    "_controller__mutmut_12": "for one sample the population SD is 0, the same as the `new_zeros(())` branch",
    "_controller__mutmut_22": "spread == 0 only when all s are equal, where `centred` is 0 and 0 / 1e-30 = 0",
    "ǁGCSStepǁsteered_backward__mutmut_36": STRICTR,
    "ǁGCSStepǁ__call____mutmut_28": STRICTR,
    "ǁGCSStepǁ__call____mutmut_47": STRICTR,
    "ǁGCSStepǁ__call____mutmut_5": "with rho = 0 the SAM branch computes the same loss, gets no perturbation (`sam_perturbation` returns None for rho 0) and clears the gradients again: same step, same reported loss",
    "ǁGCSStepǁ__call____mutmut_32": "every parameter that gets a gradient in the ascent gets one again in the steered pass (same graph), so zeroed or None gradients accumulate to the same values",
    "ǁGCSStepǁ__call____mutmut_33": "every parameter that gets a gradient in the ascent gets one again in the steered pass (same graph), so zeroed or None gradients accumulate to the same values",
}
RAW = "the raw tables have numeric dtypes (checked by `_check`; `load_tabular_sources` parses numbers), where the float conversion is a no-op"
AS2D = "`_as_2d` is only given 1-d or 2-d arrays: for 2-d the reshape is a no-op, for 1-d `(n, 1)` and `(n, -1)` / `(n, -2)` are the same shape"
DEAD = "transforming an empty frame raises later anyway (`reshape(0, -1)` of a zero-row block), so this empty-frame branch can never produce an output; `preprocess_fold` never transforms an empty frame"
REASONS["tabular"] = {
    "ǁMostFrequentImputerǁtransform__mutmut_10": "a list of Python bools becomes a bool array either way",
    "ǁMostFrequentImputerǁtransform__mutmut_12": "a list of Python bools becomes a bool array either way",
    "ǁMeanImputerǁfit__mutmut_3": "`None` is falsy like `False`: the same numeric conversion",
    "ǁMeanImputerǁtransform__mutmut_3": "`None` is falsy like `False`: the same numeric conversion",
    "ǁMeanImputerǁfit__mutmut_31": "for a column without values the mean branch gives 0 / max(0, 1) = 0.0, the same as the fill value",
    "__as_2d__mutmut_3": RAW,
    "__as_2d__mutmut_5": RAW,
    "__as_2d__mutmut_9": AS2D,
    "__as_2d__mutmut_14": AS2D,
    "__as_2d__mutmut_15": AS2D,
    "__as_2d__mutmut_17": AS2D,
    "ǁModalityPreprocessorǁ_check__mutmut_12": "`pd.to_numeric(..., errors='coerce')` gives float64 (or int64, where `isnan`/`isinf` are all False as well)",
    "ǁModalityPreprocessorǁfit__mutmut_5": RAW,
    "ǁModalityPreprocessorǁfit__mutmut_28": RAW,
    "ǁModalityPreprocessorǁfit__mutmut_54": RAW,
    "ǁModalityPreprocessorǁfit__mutmut_31": "nominal columns hold strings and None: `to_numpy()` gives an object array already",
    "ǁModalityPreprocessorǁtransform__mutmut_20": "nominal columns hold strings and None: `to_numpy()` gives an object array already",
    "ǁModalityPreprocessorǁtransform__mutmut_6": RAW,
    "ǁModalityPreprocessorǁtransform__mutmut_14": RAW,
    "ǁModalityPreprocessorǁtransform__mutmut_30": RAW,
    "ǁModalityPreprocessorǁfit__mutmut_46": "float64 is `OneHotEncoder`'s default dtype",
    "ǁModalityPreprocessorǁfit__mutmut_49": "float64 is `OneHotEncoder`'s default dtype",
    "ǁModalityPreprocessorǁtransform__mutmut_24": DEAD,
    "ǁModalityPreprocessorǁtransform__mutmut_26": DEAD,
    "ǁModalityPreprocessorǁtransform__mutmut_27": DEAD,
    "ǁModalityPreprocessorǁtransform__mutmut_41": "numpy's `astype(None)` is float64, the same as `astype(np.float64)`",
    "ǁModalityPreprocessorǁtransform__mutmut_47": "numpy takes any negative size as the one unknown dimension: `reshape(n, -2)` is `reshape(n, -1)`",
    "ǁModalityPreprocessorǁstate__mutmut_11": "the nominal statistics are an object array already",
    "ǁModalityPreprocessorǁstate__mutmut_13": "the nominal statistics are an object array already",
    "ǁModalityPreprocessorǁstate__mutmut_33": "`OneHotEncoder.categories_` of string columns are object arrays already",
    "ǁModalityPreprocessorǁstate__mutmut_35": "`OneHotEncoder.categories_` of string columns are object arrays already",
    "ǁIcdVectorizerǁfit__mutmut_6": "`lowercase=True` is `CountVectorizer`'s default",
    "ǁIcdVectorizerǁfit__mutmut_7": "the default token pattern keeps tokens of 2+ word characters; ICD-10 codes have 3+, so the vocabulary is the same",
    "ǁIcdVectorizerǁtransform__mutmut_2": "numpy's `astype(None)` is float64, the same as `astype(float)`",
    "_preprocess_fold__mutmut_5": "the frame's index is never used (only `to_numpy()` of its columns)",
    "_preprocess_fold__mutmut_14": "the frame's index is never used (only `to_numpy()` of its columns)",
    "_preprocess_fold__mutmut_7": "patient ids are unique in a fold: every sort algorithm gives the same order",
    "_preprocess_fold__mutmut_9": "patient ids are unique in a fold: every sort algorithm gives the same order",
    "_preprocess_fold__mutmut_13": "patient ids are unique in a fold: every sort algorithm gives the same order (pandas accepts the kind case-insensitively)",
    "_preprocess_fold__mutmut_44": "a list of Python bools becomes a bool array either way",
    "_preprocess_fold__mutmut_46": "a list of Python bools becomes a bool array either way",
    "_preprocess_fold__mutmut_86": "assigning None into a bool array stores False",
    "_preprocess_fold__mutmut_131": "a list of str becomes a unicode ('<U') array either way",
    "_preprocess_fold__mutmut_133": "a list of str becomes a unicode ('<U') array either way",
    "_preprocess_fold__mutmut_138": "the ICD rows are count vectors (never NaN) and an absent modality has no rows: the sum is 0 either way",
    "_preprocess_fold__mutmut_140": "the ICD rows are count vectors (never NaN) and an absent modality has no rows: the sum is 0 either way",
    "_preprocess_fold__mutmut_142": "the ICD rows are count vectors (never NaN): the sum is 0 either way",
    "_preprocess_fold__mutmut_143": "the ICD rows are count vectors (never NaN): the sum is 0 either way",
    "_write_tabular_npz__mutmut_6": "only the temporary file's suffix: the npz is written through an open handle and renamed to `path`",
    "_write_tabular_npz__mutmut_8": "only the temporary file's suffix: the npz is written through an open handle and renamed to `path`",
    "_write_tabular_npz__mutmut_9": "only the temporary file's suffix: the npz is written through an open handle and renamed to `path`",
    "_write_tabular_npz__mutmut_10": "only the temporary file's suffix: the npz is written through an open handle and renamed to `path`",
    "ǁModalityPreprocessorǁfeature_names__mutmut_11": "`zip(strict=...)`: the one-hot encoder is fitted on exactly the nominal columns, one category list each",
    "ǁModalityPreprocessorǁstate__mutmut_29": "`zip(strict=...)`: the one-hot encoder is fitted on exactly the nominal columns, one category list each",
    "_read_tabular_npz__mutmut_2": "`allow_pickle=False` is `np.load`'s default (None is falsy too); the `True` mutant is killed",
    "_read_tabular_npz__mutmut_4": "`allow_pickle=False` is `np.load`'s default; the `True` mutant is killed",
}


def parse(module: str) -> list[tuple[str, list[str], list[str]]]:
    text = (OUT / module / "survivors.diff").read_text()
    out = []
    for block in [b for b in text.split("\n# ") if b.strip()]:
        name = block.splitlines()[0].replace("# ", "").replace(": survived", "").strip()
        minus = [
            ln[1:].strip() for ln in block.splitlines() if ln.startswith("-") and not ln.startswith("---")
        ]
        plus = [
            ln[1:].strip() for ln in block.splitlines() if ln.startswith("+") and not ln.startswith("+++")
        ]
        out.append((name, minus, plus))
    return out


def strip_comment(s):
    return re.sub(r"\s+#.*$", "", s)


def generic(minus, plus):
    m = " ".join(strip_comment(x) for x in minus)
    p = " ".join(strip_comment(x) for x in plus)

    def norm_device(s):
        s = re.sub(r"device=[\w\.]+", "", s)
        return re.sub(r"[ ,]+", " ", s).replace("( ", "(").replace(" )", ")")

    if "device" in m and norm_device(m) == norm_device(p):
        return "DEV"
    if (
        '"NAN"' in p
        and m.replace('"nan"', '"NAN"') == p
        or ('"NAN"' in p and "nan" in m and p.count('"NAN"') == 1 and p.replace('"NAN"', '"nan"') == m)
    ):
        return "NAN"
    if "errstate" in m:
        return "ERRSTATE"
    if "strict=True" in m and re.sub(r",? ?strict=\w+", "", m).replace(" )", ")") == re.sub(
        r",? ?strict=\w+", "", p
    ).replace(" )", ")").replace(", )", ")"):
        return "STRICT"
    if "map_location" in m and "map_location" in m and ("map_location=None" in p or "map_location" not in p):
        return "MAPLOC"
    if "weights_only=True" in m and ("weights_only=None" in p or "weights_only" not in p):
        return "WEIGHTSONLY"
    if "as_tuple=False" in m and "as_tuple" not in p:
        return "DEFAULTARG"
    return None


GENERIC = {
    "DEV": "only the `device=` argument changes: identical on CPU (where CI runs); on CUDA the mismatch raises a device error, never a silent wrong value",
    "NAN": '`float("NAN")` is the same NaN as `float("nan")`',
    "ERRSTATE": "only which numpy floating-point warnings are silenced; no value changes",
    "STRICT": "`zip(strict=...)`: both sequences are built from the same list, so they always have equal length",
    "MAPLOC": "`map_location` of a CPU checkpoint loaded on CPU: no effect",
    "WEIGHTSONLY": "`weights_only` None/omitted is torch's default, `True` (torch >= 2.6); the `False` mutant is killed",
    "DEFAULTARG": "the argument removed is passed at its default value",
}


def summary(module: str) -> dict[str, int]:
    text = (OUT / module / "summary.txt").read_text()
    return {k: int(v) for k, v in re.findall(r"(total|killed|survived|other)=(\d+)", text)}


def main() -> int:
    check = "--check" in sys.argv
    missing, sections, rows_summary = [], [], []
    for module in MODULES:
        if not (OUT / module / "survivors.diff").exists():
            continue
        counts = summary(module)
        table = REASONS.get(module, {})
        rows = []
        for name, minus, plus in parse(module):
            num = int(name.rsplit("_", 1)[1])
            key = name.split(".x", 1)[1]
            func = key.rsplit("__mutmut", 1)[0].replace("\u01c1", ".").strip("_.")
            reason = table.get(key) or GENERIC.get(generic(minus, plus)) or table.get(num)
            if reason is None:
                missing.append(f"{module} {name}: {' / '.join(minus)} -> {' / '.join(plus)}")
                reason = "**not triaged**"
            change = " / ".join(strip_comment(x) for x in plus) or "(removed: " + " / ".join(minus) + ")"
            change = change.replace("|", "\\|")
            change = change if len(change) <= 110 else change[:107] + "..."
            rows.append(f"| `{func}` {num} | `{change}` | {reason} |")
        path = (OUT / module / "summary.txt").read_text().split()[1]
        n_equivalent = len(rows) - sum("not triaged" in r for r in rows)
        rows_summary.append(
            f"| {module} | `{path}` | {counts['total']} | {counts['killed']} | {counts['survived']} | "
            f"{n_equivalent} | {counts['other']} |"
        )
        sections.append(
            f"\n### {module} (`{path}`)\n\n| mutant | change | why it is equivalent |\n| --- | --- | --- |\n"
            + "\n".join(rows)
            + "\n"
        )
    for line in missing:
        print("not triaged:", line, file=sys.stderr)
    if check:
        return 1 if missing else 0
    head = (
        "| module | file | mutants | killed | survived | equivalent (below) | other |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows_summary) + "\n"
    )
    text = DOC.read_text()
    begin, stop = "<!-- summary begin -->", "<!-- summary end -->"
    text = text[: text.index(begin) + len(begin)] + "\n" + head + text[text.index(stop) :]
    begin, stop = "<!-- survivors begin -->", "<!-- survivors end -->"
    text = text[: text.index(begin) + len(begin)] + "\n" + "".join(sections) + "\n" + text[text.index(stop) :]
    DOC.write_text(text)
    print(f"{DOC}: {len(missing)} survivors without a reason", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
