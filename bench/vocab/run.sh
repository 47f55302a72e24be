#!/usr/bin/env bash
# Vocabulary merge against the same merge without a tokenizer source, same inputs, same run (docs/benchmarks.md,
# "Vocabulary merge"). Usage: bench/vocab/run.sh [DIR] [HIDDEN]. Prints wall time and peak RSS of each, 3 rounds alternating.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-/tmp/sensmerge-vocab-bench}; hidden=${2:-4096}
[ -d "$dir/models/other" ] || /usr/bin/python3 bench/vocab/make_models.py "$dir/models" "$hidden"
host=src/SensMerging.Host/bin/Release/net10.0/sensmerge.dll
for v in legacy union; do
  { echo "merge_method: task_arithmetic"; echo "base_model: $dir/models/base"; echo "models:";
    echo "  - model: $dir/models/chatml"; echo "    parameters: {weight: 0.7}";
    echo "  - model: $dir/models/other"; echo "    parameters: {weight: 0.5}";
    [ "$v" = union ] && echo "tokenizer_source: union"; } > "$dir/$v.yml"
done
for round in 1 2 3; do
  for v in legacy union; do
    rm -rf "$dir/out-$v"
    /usr/bin/time -v dotnet "$host" merge "$dir/$v.yml" --out "$dir/out-$v" --compute-dtype float32 --plugins plugins.json \
      --registry "$dir/reg/merges.db" > "$dir/$v.out" 2> "$dir/$v.err"
    echo "round $round $v: $(grep 'Elapsed' "$dir/$v.err" | awk '{print $NF}') (m:ss), peak RSS $(grep 'Maximum resident' "$dir/$v.err" | awk '{print $NF}') KB"
  done
done
