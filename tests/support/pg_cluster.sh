#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL cluster for the test suite.
#   pg_cluster.sh start <env-file>   initdb in a fresh temp dir, start on a free port,
#                                    write PARLEY_TEST_PG_URL=... and PG_DIR=... to <env-file>
#   pg_cluster.sh stop <env-file>    stop it and delete the temp dir
# initdb and postgres refuse to run as root, so as root they run as the `postgres` user.
set -euo pipefail
action=${1:?start|stop} env_file=${2:?env file}
pg_bin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
[[ -x $pg_bin/initdb ]] || { echo "pg_cluster: no PostgreSQL server binaries under /usr/lib/postgresql" >&2; exit 1; }

as_pg() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop_cluster() {
  [[ -f $env_file ]] || return 0
  local dir
  dir=$(sed -n 's/^PG_DIR=//p' "$env_file")
  if [[ -n $dir && -d $dir ]]; then
    as_pg "$pg_bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
  fi
  rm -f "$env_file"
}

case $action in
  start)
    stop_cluster
    dir=$(mktemp -d /tmp/parley-pg.XXXXXX)
    chmod 755 "$dir"
    [[ $(id -u) == 0 ]] && chown postgres: "$dir"
    as_pg "$pg_bin/initdb" -D "$dir/data" -U parley -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    for attempt in $(seq 1 20); do
      port=$(( 20000 + RANDOM % 30000 ))
      port_in_use "$port" && continue
      if as_pg "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
          -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB" \
          start >/dev/null; then
        as_pg "$pg_bin/createdb" -h "$dir" -p "$port" -U parley parley_test
        printf 'PARLEY_TEST_PG_URL=postgresql://parley@127.0.0.1:%s/parley_test\nPG_DIR=%s\nPG_PORT=%s\nPG_BIN=%s\n' \
          "$port" "$dir" "$port" "$pg_bin" >"$env_file"
        echo "pg_cluster: started on 127.0.0.1:$port in $dir"
        exit 0
      fi
    done
    cat "$dir/postgres.log" >&2
    exit 1
    ;;
  stop)
    stop_cluster
    echo "pg_cluster: stopped"
    ;;
  *) echo "usage: $0 start|stop <env-file>" >&2; exit 2 ;;
esac
