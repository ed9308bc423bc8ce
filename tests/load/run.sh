#!/usr/bin/env bash
# Benchmarks parleyd with parley_load and compares its chat relay with a plain
# Boost.Beast echo server and Node's `ws` echo server on the same pinning.
#
#   tests/load/run.sh PARLEYD [options] [scenario...]
#
#   PARLEYD            the parleyd binary (this script builds nothing)
#   --load PATH        parley_load (default: tests/load/parley_load in PARLEYD's build tree)
#   --out DIR          results directory (default: ./load-results-<date>); results.jsonl + tables.txt
#   --runs N           runs per comparison point; the summary quotes the median (default 3)
#   --duration S       measured seconds per run (default 10)
#   --smoke            a few seconds each, few connections, no PostgreSQL or comparison
#   --nodelay-shim     run parleyd with an LD_PRELOAD shim that sets TCP_NODELAY on accepted
#                      sockets (parleyd does not; this measures what that fix would give)
#   scenario...        any of: relay idle storm durable reconnect slow compare summary (default: all
#                      but summary, which only summarises the results already in --out)
#
# Pinning: the server under test (parleyd, the Beast echo server, node) runs on
# CPU 0, parley_load on CPU 1 (taskset), when the machine has two CPUs or more.
# Each scenario starts a fresh parleyd (SQLite in a temp dir; PostgreSQL from
# tests/support/pg_cluster.sh for `durable`). Needs: taskset (util-linux); for
# `compare`, the Debian packages libboost1.81-doc (the Beast example), g++,
# nodejs and npm (npm installs `ws` into the temp dir from the npm registry).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
parleyd=$(realpath "${1:?usage: run.sh PARLEYD [--load PATH] [--out DIR] [--runs N] [--duration S] [--smoke] [scenario...]}")
shift
load="" out="load-results-$(date +%Y%m%d-%H%M%S)" runs=3 duration=10 smoke=0 nodelay_shim=0 scenarios=()
while (($#)); do
  case $1 in
    --load) load=$(realpath "$2"); shift 2 ;;
    --out) out=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --smoke) smoke=1; shift ;;
    --nodelay-shim) nodelay_shim=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) scenarios+=("$1"); shift ;;
  esac
done
if [[ -z $load ]]; then
  load=$(dirname "$parleyd")/../tests/load/parley_load
  [[ -x $load ]] || load=$(find "$(dirname "$parleyd")/.." -name parley_load -type f -perm -u+x 2>/dev/null | head -n1)
fi
[[ -x $load ]] || { echo "run.sh: parley_load not found; pass --load" >&2; exit 1; }
((${#scenarios[@]})) || scenarios=(relay idle storm durable reconnect slow compare)
((smoke)) && { runs=1; scenarios=(relay storm reconnect slow idle); }

mkdir -p "$out"
out=$(realpath "$out")
results=$out/results.jsonl tables=$out/tables.txt
tmp=$(mktemp -d /tmp/parley-load.XXXXXX)
chmod 755 "$tmp"
server_pid="" pg_env=$tmp/pg.env

cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  [[ -f $pg_env ]] && bash "$here/../support/pg_cluster.sh" stop "$pg_env" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(nproc) >= 2)); then
  pin_server=(taskset -c 0) pin_load=(taskset -c 1)
else
  pin_server=() pin_load=()
fi
preload=()
if ((nodelay_shim)); then
  cat >"$tmp/nodelay.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
static int nodelay(int fd) {
  int one = 1;
  if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}
int accept(int s, struct sockaddr *a, socklen_t *l) {
  int (*real)(int, struct sockaddr *, socklen_t *) = dlsym(RTLD_NEXT, "accept");
  return nodelay(real(s, a, l));
}
int accept4(int s, struct sockaddr *a, socklen_t *l, int f) {
  int (*real)(int, struct sockaddr *, socklen_t *, int) = dlsym(RTLD_NEXT, "accept4");
  return nodelay(real(s, a, l, f));
}
C
  gcc -O2 -shared -fPIC -o "$tmp/nodelay.so" "$tmp/nodelay.c" -ldl
  preload=(env "LD_PRELOAD=$tmp/nodelay.so")
fi
tenant=bench admin_token=bench-admin-token-0123456789 agent_secret=bench-agent-secret-0123456789

free_port() {  # below the ephemeral range (32768..), so no client socket holds it
  local port
  while :; do
    port=$((10000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

wait_port() {  # wait_port PORT PID
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

stop_server() {
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}

# start_parley STORAGE_URL [DURABILITY]: a fresh parleyd with one tenant and benchmark limits, one
# I/O thread. Durability `relaxed` (ok once queued for storage) unless told otherwise: the relay
# scenarios measure routing and fan-out; `durable` measures commit on PostgreSQL.
start_parley() {
  local dir=$tmp/parley-$RANDOM
  mkdir -p "$dir"
  cat >"$dir/parley.toml" <<TOML
[server]
listen_address = "127.0.0.1"
threads = 1
[log]
level = "warn"
[storage]
url = "${1:-sqlite://$dir/parley.db}"
durability = "${2:-relaxed}"
[limits]
frames_per_second = 100000
frame_burst = 1000000
abuse_close_after = 1000000
max_connections = 19000
max_connections_per_ip = 0  # one loopback address plays every client
[tenants.$tenant]
admin_token = "$admin_token"
agent_secret = "$agent_secret"
widget_secret = "bench-widget-secret-0123456789"
TOML
  "$parleyd" -c "$dir/parley.toml" migrate >"$dir/migrate.log" 2>&1 || { cat "$dir/migrate.log" >&2; return 1; }
  "${pin_server[@]}" "${preload[@]}" "$parleyd" -c "$dir/parley.toml" serve --port 0 --port-file "$dir/port" >"$dir/parleyd.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 200); do [[ -s $dir/port ]] && break; sleep 0.05; done
  port=$(cat "$dir/port" 2>/dev/null || true)
  [[ -n $port ]] && wait_port "$port" "$server_pid" || { cat "$dir/parleyd.log" >&2; stop_server; return 1; }
}

# run_load SCENARIO ARGS...: runs parley_load against the current server.
run_load() {
  local scenario=$1
  shift
  local extra=()
  ((smoke)) && extra+=(--smoke)
  "${pin_load[@]}" "$load" "$scenario" --port "$port" --tenant "$tenant" --admin-token "$admin_token" \
    --agent-secret "$agent_secret" --server-pid "$server_pid" --json "$results" "${extra[@]}" "$@" 2>&1 | tee -a "$tables"
  return "${PIPESTATUS[0]}"
}

status=0
run_parley() {  # run_parley STORAGE_URL SCENARIO ARGS...: fresh server, one run
  local url=$1 durability=relaxed
  shift
  [[ $1 == durable ]] && durability=commit
  start_parley "$url" "$durability" || { status=1; return 0; }
  run_load "$@" || status=1
  stop_server
}

echo "# parley_load run $(date -u +%FT%TZ) on $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" | tee -a "$tables"
echo "# parleyd: $parleyd ($("$parleyd" version 2>/dev/null | head -n1))" | tee -a "$tables"

for scenario in "${scenarios[@]}"; do
  case $scenario in
    relay)
      for _ in $(seq 1 "$runs"); do run_parley "" relay --conversations 1000 --duration "$duration" --label max; done
      run_parley "" relay --conversations 1000 --rate 2000 --duration "$duration" --label rate
      ;;
    idle) run_parley "" idle --connections 18500 --duration "$duration" --concurrency 500 ;;
    storm) run_parley "" storm --agents 50 --rate 200 --duration "$duration" ;;
    reconnect) run_parley "" reconnect --conversations 2000 --duration "$duration" --concurrency 1000 ;;
    # Twice as long: the flood needs a few seconds to fill a slow consumer's socket buffers and 1 MiB queue.
    slow) run_parley "" slow --conversations 1000 --rate 2000 --slow-fraction 0.01 --duration "$((duration * 2))" ;;
    durable)
      bash "$here/../support/pg_cluster.sh" start "$pg_env" >/dev/null
      url=$(sed -n 's/^PARLEY_TEST_PG_URL=//p' "$pg_env")
      # Pin PostgreSQL next to the server: it is part of the server side.
      if ((${#pin_server[@]})); then
        for pid in $(pgrep -f "$(sed -n 's/^PG_DIR=//p' "$pg_env")/data" || true); do taskset -pc 0 "$pid" >/dev/null; done
      fi
      for _ in $(seq 1 "$runs"); do run_parley "$url" durable --conversations 1000 --duration "$duration" --label max; done
      run_parley "$url" durable --conversations 1000 --rate 1000 --duration "$duration" --label rate
      bash "$here/../support/pg_cluster.sh" stop "$pg_env" >/dev/null
      ;;
    compare)
      # The Beast example echo server, from Debian's Boost documentation package.
      example=/usr/share/doc/libboost1.81-doc/examples/libs/beast/example/websocket/server/async/websocket_server_async.cpp
      [[ -f $example ]] || [[ -f $example.gz ]] || { echo "run.sh: apt-get install libboost1.81-doc" >&2; exit 1; }
      if [[ -f $example ]]; then cp "$example" "$tmp/beast_echo.cpp"; else gunzip -c "$example.gz" >"$tmp/beast_echo.cpp"; fi
      g++ -std=c++17 -O2 -DNDEBUG -pthread -o "$tmp/beast_echo" "$tmp/beast_echo.cpp"
      # Node's ws, from the npm registry, with a ten-line echo server.
      mkdir -p "$tmp/node"
      (cd "$tmp/node" && npm install --silent --no-audit --no-fund ws >/dev/null)
      cat >"$tmp/node/echo.js" <<'JS'
const { WebSocketServer } = require('ws');
const wss = new WebSocketServer({ host: '127.0.0.1', port: Number(process.argv[2]), perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
JS
      # Interleave the three servers run by run, so drifting machine noise hits each alike.
      for _ in $(seq 1 "$runs"); do
        port=$(free_port)
        "${pin_server[@]}" "$tmp/beast_echo" 127.0.0.1 "$port" 1 >"$tmp/beast.log" 2>&1 &
        server_pid=$!
        wait_port "$port" "$server_pid"
        run_load echo --connections 1000 --duration "$duration" --label beast || status=1
        stop_server
        port=$(free_port)
        "${pin_server[@]}" node "$tmp/node/echo.js" "$port" >"$tmp/node.log" 2>&1 &
        server_pid=$!
        wait_port "$port" "$server_pid"
        run_load echo --connections 1000 --duration "$duration" --label node-ws || status=1
        stop_server
        run_parley "" relay --conversations 1000 --duration "$duration" --label compare
      done
      ;;
    summary) ;;  # only the summary of what --out already holds
    *) echo "run.sh: unknown scenario $scenario" >&2; exit 2 ;;
  esac
done

# Summary: medians per (scenario, label) and the comparison ratios.
if command -v python3 >/dev/null; then
  python3 - "$results" <<'PY' | tee -a "$tables"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
groups = {}
for r in rows:
    groups.setdefault((r["scenario"], r["label"], r["mode"]), []).append(r)
print("\n# medians")
print(f"{'scenario':10} {'label':8} {'mode':14} {'runs':>4} {'throughput/s':>13} {'p50 us':>9} {'p99 us':>9} {'p99.9 us':>9} {'cpu %':>6} {'rss MiB':>8}")
med, per_cpu = {}, {}
for (s, l, m), rs in groups.items():
    t = statistics.median(r["throughput_per_s"] for r in rs)
    med[(s, l)] = t
    # Throughput per second of server CPU: fair when the load generator, not the server, is the limit.
    per_cpu[(s, l)] = statistics.median(r["throughput_per_s"] / max(r["server"]["cpu_utilization"], 1e-9) for r in rs)
    lat = [r["latency_us"].get("latency") or r["latency_us"].get("request_to_joined") or r["latency_us"].get("reconnect") or {} for r in rs]
    q = lambda k: statistics.median(x.get(k, 0) for x in lat)
    cpu = statistics.median(100 * r["server"]["cpu_utilization"] for r in rs)
    rss = statistics.median(r["server"]["rss_end_kib"] / 1024 for r in rs)
    print(f"{s:10} {l:8} {m:14} {len(rs):4} {t:13.0f} {q('p50'):9.0f} {q('p99'):9.0f} {q('p99_9'):9.0f} {cpu:6.1f} {rss:8.1f}")
for name, table in (("throughput", med), ("throughput per server CPU-second", per_cpu)):
    p, b, n = table.get(("relay", "compare")), table.get(("echo", "beast")), table.get(("echo", "node-ws"))
    if p and b and n:
        print(f"# {name}: Parley {p:.0f}, Beast echo {b:.0f}, Node ws echo {n:.0f}; "
              f"Parley/Beast = {p / b:.2f}x (goal >= 0.8), Parley/Node ws = {p / n:.2f}x (goal >= 3)")
PY
fi
echo "run.sh: results in $results, tables in $tables"
exit "$status"
