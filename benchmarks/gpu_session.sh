#!/usr/bin/env bash
# One device call: install the carried wheels, build the random gpt-oss-20b checkpoint in /tmp, measure
# the product's own commands (benchmarks/gpu_run.py), results in $OUT (gpu_run.json, gpu_run.md, logs).
# Carry: .whl (transformers/peft/trl/fairlearn/datasets wheels), data, outputs/bench/tokenizer.
#   bash benchmarks/gpu_session.sh            # full: ~9 minutes wall at most
#   bash benchmarks/gpu_session.sh --quick    # 2-minute smoke: a 2-layer model of the same width
#   bash benchmarks/gpu_session.sh variants   # training and evaluation variants side by side (gpu_variants.py)
set -eu -o pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # tokenizers parallel, as users run them
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
QUICK=""; LAYERS=""; BUDGET=${BUDGET:-390}   # seconds for the measurements, after ~2 min of wheels + checkpoint
SCRIPT=benchmarks/gpu_run.py
if [ "${1:-}" = "--quick" ]; then QUICK="--quick"; LAYERS="--layers 2"; BUDGET=90; shift; fi
if [ "${1:-}" = "variants" ]; then SCRIPT=benchmarks/gpu_variants.py; shift; fi
# further arguments go to gpu_run.py, e.g. `--only run` (the whole `hatelens run`) or `--only cold --only warm`
{
  echo "== $(date -u +%H:%M:%S) wheels"
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -m hatelens doctor || true
  echo "== $(date -u +%H:%M:%S) random checkpoint"
  MODEL=/tmp/gpt-oss-20b-random
  rm -rf "$MODEL"
  python3 benchmarks/build_random_checkpoint.py --tokenizer outputs/bench/tokenizer --out "$MODEL" $LAYERS \
    | tee "$OUT/checkpoint.json"
  echo "== $(date -u +%H:%M:%S) measurements"
  python3 $SCRIPT --model "$MODEL" --out "$OUT" --budget-s $BUDGET $QUICK "$@"
  echo "== $(date -u +%H:%M:%S) done"
} 2>&1 | tee "$OUT/log"
