#!/usr/bin/env bash
# Training speed of cpu_small's shapes on this machine, through `hatelens train` itself (the trainer's own
# length-grouped sampler, the shared-opening loss, the same augmentation-free rows): one after the other, on a
# seeded 240-row sample of data/train.jsonl, one epoch, no validation before training. Writes the table to
# benchmarks/results/train_shapes_cpu.md (a new section on top; earlier runs are kept below it). About 10 minutes
# on a 2-core CPU; run it on an otherwise idle machine. SHAPES picks rows by name, side by side in one run:
#   bash benchmarks/train_shapes.sh
#   SHAPES="b8x1 b8d0" bash benchmarks/train_shapes.sh
set -eu -o pipefail
BIN=${BIN:-.venv/bin}
WORK=$(mktemp -d)
RESULT=benchmarks/results/train_shapes_cpu.md
ALL_LINEAR='lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]'
TOP15='lora.layers_to_transform=[15,16,17,18,19,20,21,22,23,24,25,26,27,28,29]'
EARLIER=$(sed -n '/^## /,$p' "$RESULT" 2>/dev/null || true)  # the sections of earlier runs
row() {  # name, overrides...  (LAUNCH: a launcher put before `-m hatelens`, e.g. two data-parallel processes)
  local name=$1; shift
  if [ -n "${SHAPES:-}" ] && [[ " $SHAPES " != *" $name "* ]]; then return; fi
  /usr/bin/time -f "%M" -o "$WORK/rss" ${LAUNCH:-"$BIN/python"} -m hatelens train --config cpu_small --output-dir "$WORK" \
    --name "$name" max_train_samples=240 max_val_samples=16 epochs=1 eval_on_start=false "$@" --quiet > /dev/null
  python3 - "$WORK" "$name" "$*" <<'PY'
import glob, json, sys
work, name, overrides = sys.argv[1:]
summary = json.load(open(sorted(glob.glob(f"{work}/*_{name}/training_summary.json"))[-1]))
rss_gb = int(open(f"{work}/rss").read().split()[-1]) / 1e6
launch = f"{summary['processes']} processes: " if summary.get("processes", 1) > 1 else ""
print(f"| {launch}`{overrides}` | {summary['n_train']} | {summary['train_runtime_s']:.1f} | "
      f"{summary['train_samples_per_s']:.2f} | {rss_gb:.1f} |")
PY
}
{
  echo "# Training speed of cpu_small's shapes (\`bash benchmarks/train_shapes.sh\`)"
  echo
  echo "## Run of $(date -u '+%Y-%m-%d %H:%M') UTC${SHAPES:+ (SHAPES=\"$SHAPES\")}"
  echo
  echo "- machine: $(python3 -c 'import platform,os;print(platform.processor() or platform.machine(), os.cpu_count(), "cores")'),"\
       "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); date $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- workload: \`hatelens train --config cpu_small max_train_samples=240 max_val_samples=16 epochs=1"\
       "eval_on_start=false <overrides>\`, one run after the other; samples/s is the trainer's own over the epoch"
  echo
  echo "| overrides | rows | train s | samples/s | peak RSS GB |"
  echo "|---|---:|---:|---:|---:|"
  row b4x2 batch_size=4 grad_accum=2
  row b8x1 batch_size=8 grad_accum=1
  row b8d0 batch_size=8 grad_accum=1 lora.dropout=0.0  # make run's shape since 2026-12-03
  row b8d0off batch_size=8 grad_accum=1 lora.dropout=0.0 template=compact_offensive  # and its template since 07:16 UTC
  row b16x1 batch_size=16 grad_accum=1
  row b8top15 batch_size=8 grad_accum=1 "$ALL_LINEAR" "$TOP15"
  # two data-parallel processes of one thread each (gloo), 4 rows each: the same effective batch of 8
  LAUNCH="env OMP_NUM_THREADS=1 $BIN/accelerate launch --config_file configs/accelerate/multi_gpu.yaml \
--num_processes 2 --main_process_port 0" row ddp2x4 batch_size=4 grad_accum=1
} > "$WORK/new.md"
{ cat "$WORK/new.md"; [ -z "$EARLIER" ] || printf '\n%s\n' "$EARLIER"; } > "$RESULT"
cat "$WORK/new.md"
rm -rf "$WORK"
