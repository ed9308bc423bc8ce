#!/usr/bin/env bash
# Runs every libFuzzer target of tests/fuzz for a bounded time on its corpus
# (tests/fuzz/corpus/<target>), adding what it finds to a copy of the corpus
# in the build directory, and fails if any target crashes, leaks or times out.
#   bash tests/fuzz/run.sh <fuzz build dir> [seconds per target, default 60]
# A crash leaves its input in <build dir>/artifacts/: add it to the corpus once fixed.
set -euo pipefail
build=$(cd "$1" && pwd)
seconds=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$build/artifacts"
failed=0
for binary in "$build"/fuzz_*; do
  [[ -x $binary ]] || continue
  target=${binary##*/fuzz_}
  work=$build/corpus/$target
  mkdir -p "$work"
  [[ -d $here/corpus/$target ]] && cp -n "$here/corpus/$target"/* "$work"/ 2>/dev/null || true
  log=$build/$target.log
  if "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 \
       -artifact_prefix="$build/artifacts/$target-" "$work" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "fuzz $target: ok, $runs runs in ${seconds}s ($((runs / seconds))/s), $cov, corpus $(ls "$work" | wc -l) inputs"
  else
    echo "fuzz $target: FAILED (see $log)" >&2
    tail -40 "$log" >&2
    failed=1
  fi
done
exit $failed
