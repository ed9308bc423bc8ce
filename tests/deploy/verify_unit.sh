#!/usr/bin/env bash
# Checks deploy/parleyd.service with `systemd-analyze verify`, and that it
# agrees with the defaults in deploy/parley.toml.
#
#   verify_unit.sh <deploy dir> <built parleyd>
#
# verify insists that ExecStart= is executable, so it checks a copy whose
# ExecStart runs the parleyd just built instead of /usr/bin/parleyd. It exits
# 0 even for unknown keys and bad values, so any line it prints about our unit
# fails the test; lines about other units on the machine are only shown.
set -euo pipefail
deploy_dir=$1
parleyd=$(realpath "$2")
unit=$deploy_dir/parleyd.service
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }

command -v systemd-analyze >/dev/null || { echo "systemd-analyze missing (Debian package: systemd)" >&2; exit 1; }
[[ -x $parleyd ]] || { echo "not executable: $parleyd" >&2; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Same file name (the unit name comes from it), ExecStart (and ExecReload's
# check-config) pointed at the build.
grep -q '^ExecStart=/usr/bin/parleyd ' "$unit" || fail "ExecStart= does not run /usr/bin/parleyd"
grep -q '^ExecReload=/usr/bin/parleyd .* check-config$' "$unit" || fail "ExecReload= does not check the config first"
sed -e "s#^ExecStart=/usr/bin/parleyd #ExecStart=$parleyd #" -e "s#^ExecReload=/usr/bin/parleyd #ExecReload=$parleyd #" \
  "$unit" >"$scratch/parleyd.service"

status=0
systemd-analyze verify "$scratch/parleyd.service" >"$scratch/verify.out" 2>&1 || status=$?
if grep -q 'parleyd\.service' "$scratch/verify.out"; then
  fail "systemd-analyze verify complains about the unit:"
  grep 'parleyd\.service' "$scratch/verify.out" >&2
elif ((status != 0)); then
  fail "systemd-analyze verify exited $status"
fi
if grep -qv 'parleyd\.service' "$scratch/verify.out"; then
  echo "note: systemd-analyze printed about other units (ignored):"
  grep -v 'parleyd\.service' "$scratch/verify.out" || true
fi

# The service's settings, as systemd itself resolves them. `systemctl show`
# needs a running manager, so read the file: last assignment wins.
setting() { sed -n "s/^$1=//p" "$unit" | tail -n 1; }
seconds() {  # 30s, 2min, 90 -> seconds
  local v=$1
  case $v in
    *min) echo $((${v%min} * 60)) ;;
    *s) echo "${v%s}" ;;
    *) echo "$v" ;;
  esac
}
toml() { sed -n "s/^$1 *= *\([0-9]*\).*/\1/p" "$deploy_dir/parley.toml" | head -n 1; }

# shellcheck disable=SC2016  # $MAINPID is systemd's, not ours
for expected in Type=notify NotifyAccess=main Restart=on-failure User=parley StateDirectory=parley \
  NoNewPrivileges=yes ProtectSystem=strict CapabilityBoundingSet= 'ExecReload=/bin/kill -HUP $MAINPID'; do
  grep -qxF "$expected" "$unit" || fail "missing: $expected"
done
[[ -n $(setting WatchdogSec) ]] || fail "WatchdogSec= not set (parleyd pings WATCHDOG=1)"

shutdown_timeout=$(toml shutdown_timeout_s)
stop_timeout=$(seconds "$(setting TimeoutStopSec)")
[[ -n $shutdown_timeout && -n $stop_timeout ]] || fail "cannot read shutdown_timeout_s or TimeoutStopSec"
((stop_timeout > shutdown_timeout)) ||
  fail "TimeoutStopSec ($stop_timeout s) must exceed server.shutdown_timeout_s ($shutdown_timeout s)"

max_connections=$(toml max_connections)
nofile=$(setting LimitNOFILE)
((nofile > max_connections)) ||
  fail "LimitNOFILE ($nofile) must exceed limits.max_connections ($max_connections)"

# The unit keeps its state where the default storage.url puts the database.
grep -q '^url = "sqlite:///var/lib/parley/' "$deploy_dir/parley.toml" ||
  fail "default storage.url is not under /var/lib/parley (StateDirectory=parley)"

((failed == 0)) && echo "parleyd.service: verified"
exit "$failed"
