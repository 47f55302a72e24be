#!/usr/bin/env bash
# Runs the whole test suite (every test project of the solution) and ends with one machine-readable line:
#   N passed, N failed, N skipped
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh || exit 1

log=$(mktemp)
dotnet test SensMerging.Host.sln -c Release --no-build --nologo 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

# dotnet test prints one summary per test assembly: "Passed!  - Failed: 0, Passed: 18, Skipped: 0, Total: 18, ..."
read -r passed failed skipped < <(grep -E '^(Passed|Failed)! +- ' "$log" | sed -E 's/.*Failed: *([0-9]+), Passed: *([0-9]+), Skipped: *([0-9]+).*/\2 \1 \3/' \
  | awk '{p+=$1; f+=$2; s+=$3} END {print p+0, f+0, s+0}')
rm -f "$log"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1   # the run failed without a failing test (build error, crashed test host): never report green
fi
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
exit "$status"
