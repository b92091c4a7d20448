#!/usr/bin/env bash
# Mutation testing of the math modules with mutmut (a dev tool: `pip install mutmut`, not a project dep).
#
#   tools/mutation.sh                 # every module below, one after the other
#   tools/mutation.sh losses clam     # only these (keys of TESTS below)
#   MUTMUT_JOBS=2 tools/mutation.sh   # parallel mutmut workers (default 1)
#
# Each module is mutated alone, against only the test files (or test ids) that cover it, in a scratch
# copy of the repository under bench/out/mutation/<module>/ (git-ignored): the working tree is never
# mutated.  Per module it writes there summary.txt (mutants total / killed / survived / other),
# survivors.txt (mutmut's name of every surviving mutant) and survivors.diff (what each one changes).
# Not part of the default pytest run: one module takes minutes to an hour of CPU; runs under nice.
# The triage of the survivors (a test that kills each, or why it is equivalent) is in docs/mutation.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MUTMUT="${MUTMUT:-mutmut}"
JOBS="${MUTMUT_JOBS:-1}"
NICE="${MUTMUT_NICE:-15}"
OUT="${MUTATION_OUT:-$ROOT/bench/out/mutation}"

declare -A MODULE TESTS
MODULE[losses]=src/haf/losses.py
TESTS[losses]="tests/test_reference_math.py tests/test_core_contracts.py::test_cox_breslow_matches_hand_computation
tests/test_core_contracts.py::test_cox_efron_differs_from_breslow_only_with_ties
tests/test_core_contracts.py::test_cox_without_events_is_zero_with_grad"
MODULE[alignment]=src/haf/alignment/losses.py
TESTS[alignment]="tests/test_reference_math.py
tests/test_alignment.py::test_finite_gradient_rank_one_patient
tests/test_alignment.py::test_finite_gradient_tied_top_singular_values
tests/test_alignment.py::test_two_of_seven_modalities_uses_only_those_columns
tests/test_alignment.py::test_sv_loss_decreases_as_columns_become_parallel
tests/test_alignment.py::test_pd_loss_invariant_to_flipping_q1_sign
tests/test_alignment.py::test_single_modality_patient_is_skipped
tests/test_alignment.py::test_clip_ignores_patients_without_wsi"
MODULE[clam]=src/haf/mil/clam.py
TESTS[clam]="tests/test_reference_math.py tests/test_stage1_model.py"
MODULE[mofe]=src/haf/fusion/model.py
TESTS[mofe]="tests/test_reference_math.py
tests/test_fusion.py::test_reduced_sets_are_uniform_proper_nonempty_subsets tests/test_fusion.py::test_mofe_loss_by_hand"
MODULE[scores]=src/haf/eval/scores.py
TESTS[scores]="tests/test_reference_metrics.py"
MODULE[survival]=src/haf/eval/survival.py
TESTS[survival]="tests/test_reference_metrics.py tests/test_eval.py::test_cindex_risk_sign_higher_risk_earlier_death
tests/test_eval.py::test_time_grid_clamped_inside_train_and_test_follow_up
tests/test_eval.py::test_td_auc_survives_test_deaths_beyond_training_follow_up
tests/test_eval.py::test_breslow_probability_increases_with_risk"
MODULE[binary]=src/haf/eval/binary.py
TESTS[binary]="tests/test_reference_metrics.py tests/test_reference_binary.py tests/test_eval.py::test_fold_metrics_match_hand_computed_values
tests/test_eval.py::test_fixed_threshold_is_prob_half_or_median_validation_risk_for_cox
tests/test_eval.py::test_val_threshold_maximises_balanced_accuracy_on_validation
tests/test_eval.py::test_val_rule_changes_accuracy_only_through_validation_predictions
tests/test_eval.py::test_batched_auc_equals_sklearn_with_ties
tests/test_eval.py::test_paired_bootstrap_identical_methods_gives_p_one_and_zero_delta
tests/test_eval.py::test_paired_bootstrap_detects_a_clearly_better_method
tests/test_eval.py::test_bootstrap_ci_brackets_the_pooled_estimate_and_is_seeded"
MODULE[masking]=src/haf/eval/masking.py
TESTS[masking]="tests/test_reference_metrics.py tests/test_core_contracts.py::test_masks_keep_one_observed_and_are_seeded
tests/test_core_contracts.py::test_mask_scenario_touches_only_its_group
tests/test_core_contracts.py::test_masked_prediction_table_repeats
tests/test_core_contracts.py::test_batched_masked_table_equals_unbatched"
MODULE[targets]=src/haf/cohort/targets.py
TESTS[targets]="tests/test_reference_metrics.py tests/test_cohort_manifest.py::test_targets_rules
tests/test_cohort_manifest.py::test_targets_count_every_exclusion"
MODULE[tabular]=src/haf/cohort/tabular.py
TESTS[tabular]="tests/test_cohort_tabular.py tests/test_reference_tabular.py"
MODULE[gcs]=src/haf/comparators/gcs.py
TESTS[gcs]="tests/test_reference_math.py tests/test_gcs.py"
ORDER=(losses alignment clam mofe scores survival binary masking targets tabular gcs)

command -v "$MUTMUT" > /dev/null || { echo "mutmut not found: pip install mutmut (or set MUTMUT=...)" >&2; exit 2; }
[[ $# -gt 0 ]] && ORDER=("$@")

for key in "${ORDER[@]}"; do
    module="${MODULE[$key]:-}"
    [[ -n "$module" ]] || { echo "unknown module key '$key'; known: ${!MODULE[*]}" >&2; exit 2; }
    work="$OUT/$key"
    rm -rf "$work"
    mkdir -p "$work"
    # a scratch copy: the sources, the tests and what the tests read (config, fixtures)
    cp -r "$ROOT/src" "$ROOT/tests" "$ROOT/config" "$work/"
    find "$work" -name __pycache__ -prune -exec rm -rf {} +
    {
        echo "[mutmut]"
        echo "source_paths = src"
        echo "only_mutate = $module"
        echo "also_copy ="
        echo "    config"
        echo "pytest_add_cli_args ="
        echo "    -p"
        echo "    no:cacheprovider"
        echo "    -q"
        echo "pytest_add_cli_args_test_selection ="
        for t in ${TESTS[$key]}; do echo "    $t"; done
    } > "$work/setup.cfg"
    echo "== $key: $module against: $(echo ${TESTS[$key]} | tr '\n' ' ')"
    (
        cd "$work"
        # the tests must import the mutated copy, never an installed haf
        unset PYTHONPATH
        OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n "$NICE" "$MUTMUT" run --max-children "$JOBS" > run.log 2>&1 || true
        "$MUTMUT" results --all true > results.txt 2>&1 || true
        grep -E ": survived$" results.txt | sed 's/: survived$//; s/^ *//' > survivors.txt || true
        : > survivors.diff
        while read -r name; do
            "$MUTMUT" show "$name" >> survivors.diff 2>&1 || true
            echo >> survivors.diff
        done < survivors.txt
        total=$(grep -cE ": [a-z ]+$" results.txt || true)
        killed=$(grep -cE ": killed$" results.txt || true)
        survived=$(grep -cE ": survived$" results.txt || true)
        other=$((total - killed - survived))
        echo "$key $module total=$total killed=$killed survived=$survived other=$other" | tee summary.txt
        if grep -q "failed to collect stats\|clean tests failed" run.log; then
            echo "  ERROR: the unmutated tests failed in the scratch copy; nothing was checked (see $work/run.log)"
        fi
        grep -vE ": (killed|survived)$" results.txt | grep -E ": " | sed 's/^/  other: /' || true
    )
done
