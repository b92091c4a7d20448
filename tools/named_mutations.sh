#!/usr/bin/env bash
# Issue 16's named mutations, applied one at a time to a scratch copy of src/ (the working tree is never
# touched), each run against the reference tests: every one must make a test fail.
#   tools/named_mutations.sh        (prints "<mutation>: <pytest summary>" and the failing tests)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python}"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
TESTS=(tests/test_reference_math.py tests/test_reference_metrics.py)
status=0
mutate() {  # name file old new
    rm -rf "$SCRATCH/src" && cp -r "$ROOT/src" "$SCRATCH/src"
    "$PY" - "$SCRATCH/$2" "$3" "$4" <<'PY' || exit 2
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
assert text.count(old) == 1, f"{path}: {old!r} found {text.count(old)} times"
open(path, "w").write(text.replace(old, new))
PY
    out="$(cd "$ROOT" && PYTHONPATH="$SCRATCH/src" nice -n 10 "$PY" -m pytest "${TESTS[@]}" -q -p no:cacheprovider 2>&1)"
    echo "$1: $(tail -n 1 <<< "$out")"
    grep '^FAILED' <<< "$out" | sed 's/^/    /'
    grep -q '^FAILED' <<< "$out" || { echo "    NOT KILLED"; status=1; }
}
mutate "L_PD without its temperature" src/haf/alignment/losses.py \
    "logits = q1 @ q1.T / tau" "logits = q1 @ q1.T"
mutate "CLAM top-k pseudo-labels 0 instead of 1" src/haf/mil/clam.py \
    "logit_top, torch.ones_like(logit_top)" "logit_top, torch.zeros_like(logit_top)"
mutate "bag_weight on both terms" src/haf/mil/clam.py \
    "(1.0 - bag_weight) * inst_mean" "bag_weight * inst_mean"
mutate "pooled bootstrap CI lower bound at 2 alpha" src/haf/eval/binary.py \
    "float(np.quantile(valid, alpha))" "float(np.quantile(valid, 2 * alpha))"
mutate "Uno's C censoring from the test part" src/haf/eval/survival.py \
    "surv(train_event, train_time), surv(event, time), np.asarray(risk, float), tau=tau" \
    "surv(event, time), surv(event, time), np.asarray(risk, float), tau=tau"
mutate "5-year label boundary moved" src/haf/cohort/targets.py \
    "if event and time <= horizon:" "if event and time < horizon / 2:"
exit $status
