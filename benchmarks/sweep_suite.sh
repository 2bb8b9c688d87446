#!/usr/bin/env bash
# The functional suite (297 cases) scored by every finished cell of the sweeps in runs/sweeps/cells/, the way
# `hatelens run` scores it (hatelens evaluate, through the template each adapter was trained with, threshold
# 0.5). The sweep ranks on validation only; these scores are a second look (docs/quality.md says where they
# weighed in a choice). Run where the cells are (the GPU machine of gpu_quality_sweep.sh):
#   OUT=$OUT bash benchmarks/sweep_suite.sh        -> $OUT/suite_cells.json {cell name: per_functionality, ...}
#   python benchmarks/sweep_suite.py $OUT/suite_cells.json   # the table (non-hate accuracy, hate recall)
set -u
# the environment gpu_quality_sweep.sh sets up: its packages in /tmp/site, its converted models, offline
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH=/tmp/site:$PWD/src HATELENS_CACHE=/tmp/hatelens_cache
OUT=${OUT:-/tmp/sweep_suite}; mkdir -p "$OUT"
for adapter in runs/sweeps/cells/*/train/*/adapter; do
  id=$(echo "$adapter" | cut -d/ -f4)
  ls /tmp/suite_"$id"/*/metrics.json > /dev/null 2>&1 && continue  # scored by an earlier call
  python3 -m hatelens evaluate --model "$adapter" --data suites/functional/hatelens_functional.csv \
    --format hatecheck --output-dir "/tmp/suite_$id" --batch-size 64 > "/tmp/suite_$id.log" 2>&1 &
done
wait
python3 - <<'PY'
import glob, json, os
out = {}
for cell in glob.glob("runs/sweeps/cells/*/cell.json"):
    identity, name = cell.split("/")[3], json.load(open(cell))["name"]
    found = glob.glob(f"/tmp/suite_{identity}/*/metrics.json")
    if found:
        metrics = json.load(open(found[0]))
        out[name] = {"id": identity, "per_functionality": metrics["per_functionality"],
                     "roc_auc": metrics.get("roc_auc"), "recall": metrics.get("recall")}
json.dump(out, open(os.path.join(os.environ.get("OUT", "/tmp/sweep_suite"), "suite_cells.json"), "w"), indent=1)
print(len(out), "cells scored on the suite")
PY
