#!/usr/bin/env bash
# Every product feature run once on the GPU, a few steps each, and checked (bench/gpu_check.py says what and how):
#
#   bash bench/gpu_check.sh          # a GPU machine with the wheel kit carried (.whl, ../shared/gpu/README.md)
#   bash bench/gpu_check.sh --cpu    # tiny models, float32, no kit: the same checks on a CPU (CI)
#
# Further arguments go to bench/gpu_check.py (--work DIR, --only FEATURE ...).
# One device call: it installs the kit into runs/gpu-site, then runs the features
# in one process, each started only while CHECK_SECONDS (default 420) from the start leave it time, and writes
# gpu_check.json and gpu_check.log to $OUT (default runs/gpu-check). If that process dies (a CUDA fault), it is
# started again (at most twice) and goes on after the feature it died in. Exit status 0 when every feature passed.
set -uo pipefail
cd "$(dirname "$0")/.."  # the paths below are relative to the project root
out=${OUT:-runs/gpu-check}
mkdir -p "$out"
log="$out/gpu_check.log"
: > "$log"
export PYTHONUNBUFFERED=1

if [ "${1:-}" = --cpu ]; then
  shift
  python=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
  flags=(--cpu)
else
  deadline=$(( $(date +%s) + ${CHECK_SECONDS:-420} ))
  python=python3
  flags=(--deadline "$deadline")
  { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target runs/gpu-site .whl/*.whl &&
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "the wheel kit did not install (see $log)"; exit 1; }
  export PYTHONPATH=$PWD/runs/gpu-site  # the versions and the GPU go into gpu_check.json
fi

for try in 1 2 3; do
  "$python" bench/gpu_check.py --out "$out" "${flags[@]}" "$@" $([ "$try" = 1 ] || echo --resume)
  status=$?
  case $status in
    0|2|3) break ;;  # finished (2: no GPU; 3: a feature failed)
    *) echo "bench/gpu_check.py exited $status (try $try); going on after the feature it stopped in" | tee -a "$log" ;;
  esac
done
[ "$status" = 0 ]
