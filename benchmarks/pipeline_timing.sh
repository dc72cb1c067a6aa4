#!/usr/bin/env bash
# Wall time of a cold default run (fresh state dir: nothing cached) and of a cached re-run.
# Usage: benchmarks/pipeline_timing.sh [config]   (default: configs/default.yaml)
# Prints the per-step durations ZenML logs and each run's summary; numbers go in the issue notes.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/default.yaml}
state=$(mktemp -d /tmp/foundry-timing-XXXXXX)
export FOUNDRY_STATE_DIR=$state
for run in cold cached; do
  start=$(date +%s.%N)
  rc=0; .venv/bin/python run.py --config "$config" --run-name "timing-$run-$(date +%s)" > "$state/$run.log" 2>&1 || rc=$?
  end=$(date +%s.%N)
  echo "== $run run: exit $rc, wall $(echo "$end - $start" | bc) s (process start to exit)"
  grep -E "has finished in|Using cached version" "$state/$run.log" | sed -E 's/\x1b\[[0-9;]*m//g'
  sed -n '/LLM Engine Foundry/,$p' "$state/$run.log"
done
echo "logs and state: $state"
