#!/usr/bin/env bash
# Parley's two-command quick start on Debian 12 (run as root, from anywhere):
#
#   bash deploy/quickstart.sh run    install what is missing, build Release, start
#                                    parleyd on the embedded SQLite store with a demo tenant
#   bash deploy/quickstart.sh test   install what is missing (PostgreSQL server included),
#                                    build with warnings as errors and again with
#                                    address+undefined sanitizers, run the whole test suite
#
# Both are idempotent: a second run installs nothing and rebuilds only what changed.
# Environment: PARLEY_PORT (run; default 8080), PARLEY_JOBS (build parallelism),
# PARLEY_SKIP_SANITIZE=1 (test: skip the sanitizer pass, for quick local runs),
# PARLEY_FUZZ_SECONDS (test: seconds per fuzz target, default 30; 0 skips fuzzing).
# `test` also runs the browser tests of the inbox and widget (web/tests) in Debian's
# Chromium; their one npm dependency comes from web/package-lock.json (npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=${PARLEY_JOBS:-$(nproc)}

build_packages=(
  cmake ninja-build g++ pkg-config git ca-certificates tzdata
  libboost1.81-dev libpqxx-dev libpq-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  catch2 libsqlite3-dev libssl-dev libhowardhinnant-date-dev libjwt-dev
  libtoml11-dev libcli11-dev libsystemd-dev libbenchmark-dev
)
# systemd: systemd-analyze, systemd-sysusers, systemd-tmpfiles (tests/deploy); dpkg-dev, file: cpack -G DEB.
# clang-14, libclang-rt-14-dev: libFuzzer for the fuzz targets (tests/fuzz); chromium: web/tests.
test_packages=(postgresql postgresql-contrib systemd procps iproute2 dpkg-dev file clang-14 libclang-rt-14-dev
  chromium)

install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  echo "quickstart: installing ${missing[*]}"
  if [[ $(id -u) != 0 ]]; then
    echo "quickstart: run as root (or install these packages first)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

configure_and_build() {  # <build dir> [--source <dir>] <cmake args...>
  local dir=$1 source=$root; shift
  if [[ ${1:-} == --source ]]; then source=$2; shift 2; fi
  cmake -S "$source" -B "$dir" -G Ninja "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
}

# Node.js (>= 18) for the browser tests: Debian's nodejs and npm unless a node is there already.
install_node() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && return 0
  install_missing nodejs npm
}

random_secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

cmd_run() {
  install_missing "${build_packages[@]}"
  configure_and_build "$root/build/release" -DCMAKE_BUILD_TYPE=Release -DPARLEY_BUILD_TESTS=OFF -DPARLEY_BUILD_BENCH=OFF
  local state=$root/build/demo port=${PARLEY_PORT:-8080}
  mkdir -p "$state"
  if [[ ! -f $state/parley.toml ]]; then
    cat >"$state/parley.toml" <<TOML
# Demo configuration written by deploy/quickstart.sh run. See deploy/parley.toml for every key.
[server]
listen_address = "127.0.0.1"
port = $port
public_url = "ws://127.0.0.1:$port"

[storage]
url = "sqlite://$state/parley.db"

[tenants.demo]
name = "Demo Company"
allow_anonymous = true
admin_token = "$(random_secret)"
agent_secret = "$(random_secret)"
widget_secret = "$(random_secret)"
TOML
  fi
  sed -i "s/^port = .*/port = $port/; s#^public_url = .*#public_url = \"ws://127.0.0.1:$port\"#" "$state/parley.toml"
  local parleyd=$root/build/release/server/parleyd
  "$parleyd" -c "$state/parley.toml" migrate >/dev/null 2>&1 || true
  local token token2 admin
  token=$("$parleyd" -c "$state/parley.toml" token --tenant demo --agent demo-agent --ttl-hours 24)
  token2=$("$parleyd" -c "$state/parley.toml" token --tenant demo --agent demo-agent-2 --ttl-hours 24)
  admin=$(sed -n 's/^admin_token = "\(.*\)"/\1/p' "$state/parley.toml")
  # The agent token travels in the URL fragment: browsers never send it to a server, so it reaches no log.
  cat <<INFO

  Parley is starting on the embedded SQLite store ($state/parley.db).
    Agent Inbox (Demo Agent):    http://127.0.0.1:$port/inbox/#token=$token
    Second agent's inbox:        http://127.0.0.1:$port/inbox/#token=$token2
    Demo site with the widget:   http://127.0.0.1:$port/demo/
  Open the inbox in one tab and the demo site in another, and chat with yourself.
    Visitors (chat widget):  ws://127.0.0.1:$port/v1/visitor   tenant "demo"
    Agents (inbox client):   ws://127.0.0.1:$port/v1/agent
    Demo agent token:        $token
    Admin API token:         $admin
    Health:                  http://127.0.0.1:$port/healthz
  Stop it with Ctrl-C.

INFO
  exec "$parleyd" -c "$state/parley.toml" serve --seed-demo
}

cmd_test() {
  install_missing "${build_packages[@]}" "${test_packages[@]}"
  install_node
  # Exactly the locked playwright-core; it drives /usr/bin/chromium and downloads no browser.
  (cd "$root/web" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  local failed=0
  configure_and_build "$root/build/ci" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPARLEY_WERROR=ON
  (cd "$root/build/ci" && PARLEY_REQUIRE_BROWSER=1 ctest --output-on-failure --timeout 900 -j "$jobs") || failed=1
  if [[ ${PARLEY_SKIP_SANITIZE:-0} != 1 ]]; then
    configure_and_build "$root/build/asan" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
      -DPARLEY_WERROR=ON -DPARLEY_SANITIZE=address,undefined -DPARLEY_BUILD_BENCH=OFF
    # The browser tests ran against the first build; under the sanitizers they would only add time.
    (cd "$root/build/asan" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
      LSAN_OPTIONS=suppressions=$root/tests/support/lsan.supp \
      ctest --output-on-failure --timeout 1800 -j "$jobs" -LE browser) || failed=1
  fi
  # Coverage-guided fuzzing of the parsers that face the network and the config file,
  # a bounded time per target (PARLEY_FUZZ_SECONDS, 0 skips).
  if [[ ${PARLEY_FUZZ_SECONDS:-30} != 0 ]]; then
    configure_and_build "$root/build/fuzz" --source "$root/tests/fuzz" -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=None
    bash "$root/tests/fuzz/run.sh" "$root/build/fuzz" "${PARLEY_FUZZ_SECONDS:-30}" || failed=1
  fi
  if ((failed)); then
    echo "quickstart: TESTS FAILED" >&2
    exit 1
  fi
  echo "quickstart: all tests passed"
}

case ${1:-} in
  run) cmd_run ;;
  test) cmd_test ;;
  *) echo "usage: bash deploy/quickstart.sh run|test" >&2; exit 2 ;;
esac
