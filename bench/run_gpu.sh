#!/usr/bin/env bash
# The GPU benchmarks, in stages that each fit one device call (10 minutes; each stage stops starting work at
# STAGE_SECONDS, default 540, and keeps what it measured):
#
#   bash bench/run_gpu.sh train     # training, both paths, 1024 2048 4096 mix: whatever train_gpu.json still lacks
#   bash bench/run_gpu.sh infer     # scoring: budget sweep, ours, naive, TTA, then 16- and 8-bit weights
#   bash bench/run_gpu.sh maxlen    # the longest row each training path trains at batch 1
#
# Each stage installs the wheel kit (.whl, carried: see ../shared/gpu/README.md), prints the versions and the
# GPU, builds the random Llama-3-8B-shaped model unless this machine still has it (full size, 32 layers: bf16,
# in MODEL_DIR, default runs/llama3-8b), runs, and copies bench/results/*_gpu*.json and its log to $OUT.
# Stages resume: run one again (after copying its JSON back into bench/results/) and it does what is missing.
set -uo pipefail
cd "$(dirname "$0")/.."  # the paths below are relative to the project root
stage=${1:?usage: bash bench/run_gpu.sh train|infer|maxlen}
deadline=$(( $(date +%s) + ${STAGE_SECONDS:-540} ))
out=${OUT:-runs/bench-out}
model=${MODEL_DIR:-runs/llama3-8b}
mkdir -p "$out"
log="$out/$stage.log"
save() { cp bench/results/*_gpu*.json "$out"/ 2>/dev/null; true; }
trap save EXIT

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target runs/gpu-site .whl/*.whl && export PYTHONPATH=$PWD/runs/gpu-site || exit
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch, transformers, trl, peft, bitsandbytes, datasets, unsloth
print({m.__name__: m.__version__ for m in (torch, transformers, trl, peft, bitsandbytes, datasets, unsloth)})
print(torch.cuda.get_device_name(), torch.version.cuda)" || exit
  if [ ! -f "$model/config.json" ]; then  # built into a temporary folder, renamed when complete
    began=$(date +%s)
    rm -rf "$model.tmp" runs/bench-demo
    python3 data/make_demo_data.py --out runs/bench-demo --rows 2000 --test_rows 10 &&
      python3 tools/make_random_model.py --out "$model.tmp" --preset llama3-8b --corpus runs/bench-demo/train.csv &&
      mv "$model.tmp" "$model" || exit
    echo "built $model in $(( $(date +%s) - began )) s"
  fi
  case $stage in
    train)  python3 bench/train_speed.py --model "$model" --seq_lens 1024 2048 4096 mix --skip_done --deadline "$deadline" ;;
    infer)  python3 bench/infer_speed.py --model "$model" --skip_done --deadline "$deadline" ;;
    maxlen) python3 bench/train_speed.py --model "$model" --seq_lens --find_max_len --skip_done --deadline "$deadline" ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
} 2>&1 | tee -a "$log"
