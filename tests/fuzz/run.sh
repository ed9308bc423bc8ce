#!/usr/bin/env bash
# Runs every libFuzzer target of tests/fuzz for a bounded time on its corpus
# (tests/fuzz/corpus/<target>), adding what it finds to a copy of the corpus
# in the build directory, and fails if any target crashes, leaks or times out.
# Targets run side by side, as many at a time as there are cores.
#   bash tests/fuzz/run.sh <fuzz build dir> [seconds per target, default 60]
# A crash leaves its input in <build dir>/artifacts/: add it to the corpus once fixed.
set -euo pipefail
build=$(cd "$1" && pwd)
seconds=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
parallel=$(nproc)
mkdir -p "$build/artifacts"

run_one() {  # <target>; its exit status is libFuzzer's
  local target=$1 work=$build/corpus/$1
  mkdir -p "$work"
  if [[ -d $here/corpus/$target ]]; then cp -n "$here/corpus/$target"/* "$work"/ 2>/dev/null || true; fi
  "$build/fuzz_$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -print_final_stats=1 -artifact_prefix="$build/artifacts/$target-" "$work" >"$build/$target.log" 2>&1
}

targets=()
for binary in "$build"/fuzz_*; do [[ -x $binary ]] && targets+=("${binary##*/fuzz_}"); done
((${#targets[@]} > 0)) || { echo "fuzz: no targets in $build" >&2; exit 1; }
declare -A pid_of
failed=0
for target in "${targets[@]}"; do
  while (($(jobs -rp | wc -l) >= parallel)); do sleep 1; done  # finished jobs stay waitable below
  run_one "$target" &
  pid_of[$target]=$!
done
for target in "${targets[@]}"; do
  log=$build/$target.log
  if wait "${pid_of[$target]}"; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "fuzz $target: ok, $runs runs in ${seconds}s ($((runs / seconds))/s), $cov, corpus $(ls "$build/corpus/$target" | wc -l) inputs"
  else
    echo "fuzz $target: FAILED (see $log)" >&2
    tail -40 "$log" >&2
    failed=1
  fi
done
exit $failed
