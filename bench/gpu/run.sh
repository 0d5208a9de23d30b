#!/usr/bin/env bash
# The one GPU call (docs/gpu.md): install the carried wheels, then run every GPU check into the
# output folder, with the whole log in it as run.log.
#   bash bench/gpu/run.sh "$OUT" [run.py options, e.g. --only latency --budget-s 120]
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${1:-${OUT:-}}"
if [ -z "$out" ]; then echo "usage: bash bench/gpu/run.sh OUT_DIR [run.py options]" >&2; exit 2; fi
shift || true
carry="${SAERAD_GPU_CARRY:-runs/gpu-carry}"
python="${PYTHON:-python3}"
mkdir -p "$out"
exec > >(tee "$out/run.log") 2>&1
tee_pid=$!
export PYTHONUNBUFFERED=1
site="$(mktemp -d /tmp/saerad-site.XXXXXX)"
if compgen -G "$carry/wheels/*.whl" >/dev/null; then
  # The image's python holds CUDA torch; only the packages it lacks come from the carry.
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$carry"/wheels/*.whl || echo "warning: installing the carried wheels failed; checks that need them will say so"
fi
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
"$python" bench/gpu/run.py --out "$out" --carry "$carry" "$@"
status=$?
rm -rf "$site"
exec 1>&- 2>&-
wait "$tee_pid"  # the log is complete before the folder is collected
exit $status
