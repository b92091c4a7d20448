#!/usr/bin/env bash
# Prepare a run of bench/gpu_suite.py on the lent GPU machine (docs/gpu.md): download the wheels it
# lacks (bench/gpu_wheels.txt) for its Python (CPython 3.12, manylinux x86_64) into .whl/ of this
# checkout, which the device tool then carries (carry: [".whl"]). Nothing can be downloaded there.
#
#   PYTHON=.venv/bin/python bench/gpu_prepare.sh          # any Python here with pip; default python3
#   WHL_DIR=/tmp/whl bench/gpu_prepare.sh                  # elsewhere (a dry run; nothing is excluded)
#
# Adds /.whl/ to git's info/exclude (so the wheels travel only when carried and are never committed),
# builds a wheel here for a pure-Python package published as an sdist only, refuses two versions of one
# package, and prints the total size (the working tree and carried paths travel within 64 MiB in all).
set -euo pipefail

repo=$(git rev-parse --show-toplevel)
cd "$repo"
py=${PYTHON:-python3}
dest=${WHL_DIR:-.whl}
list=bench/gpu_wheels.txt
limit_mib=48 # leaves 16 MiB of the 64 MiB for the working tree

if [[ "$dest" == ".whl" ]]; then
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
fi
mkdir -p "$dest"

platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
n=0
while read -r spec; do
    [[ -z "$spec" ]] && continue
    n=$((n + 1))
    if ! "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d "$dest" "$spec" 2>/dev/null; then
        echo "no wheel for $spec: building one here (pure-Python sdists only)"
        "$py" -m pip wheel -q --no-deps -w "$dest" "$spec"
    fi
done < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$list")

# every wheel must install on CPython 3.12 x86_64: py3-none-any, cp312 or abi3 manylinux
bad=$(find "$dest" -name '*.whl' ! -name '*-py3-none-any.whl' ! -name '*-py2.py3-none-any.whl' \
    ! -name '*cp312*manylinux*x86_64*.whl' ! -name '*abi3*manylinux*x86_64*.whl' -printf '%f\n')
if [[ -n "$bad" ]]; then
    echo "wheels that would not install on the GPU machine's CPython 3.12 x86_64:" >&2
    echo "$bad" >&2
    exit 1
fi
# one version per package (two stop the whole install there)
dupes=$(find "$dest" -name '*.whl' -printf '%f\n' | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [[ -n "$dupes" ]]; then
    echo "more than one wheel of: $dupes (remove the stale ones from $dest)" >&2
    exit 1
fi
count=$(find "$dest" -name '*.whl' | wc -l)
if ((count != n)); then
    echo "expected $n wheels ($list), found $count in $dest (stale files?)" >&2
    exit 1
fi
kib=$(du -sk "$dest" | cut -f1)
echo "$count wheels in $dest: $((kib / 1024)) MiB (limit $limit_mib MiB)"
if ((kib > limit_mib * 1024)); then
    echo "too large to travel with the working tree" >&2
    exit 1
fi
cat <<'EOF'
Device command (carry: [".whl"], timeout_s 560; docs/gpu.md):
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; export PYTHONUNBUFFERED=1; nvidia-smi >$OUT/nvidia-smi.txt 2>&1; python3 bench/gpu_suite.py --out $OUT
EOF
