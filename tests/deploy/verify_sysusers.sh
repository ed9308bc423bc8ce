#!/usr/bin/env bash
# Checks deploy/parley.sysusers and deploy/parley.tmpfiles against an empty
# scratch root: sysusers creates the `parley` user there, tmpfiles then
# creates /var/lib/parley owned by it (the owner must exist, so a tmpfiles
# entry naming another user fails). Both tools exit 0 after ignoring a bad
# line, so anything they print about our files fails the test.
#
#   verify_sysusers.sh <deploy dir>
set -euo pipefail
deploy_dir=$(cd "$1" && pwd)
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }

command -v systemd-sysusers >/dev/null || { echo "systemd-sysusers missing (Debian package: systemd)" >&2; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
root=$scratch/root
mkdir -p "$root/etc"

run_checked() {  # <what> <file name to look for> <command...>
  local what=$1 name=$2 status=0
  shift 2
  "$@" >"$scratch/out" 2>&1 || status=$?
  cat "$scratch/out"
  if ((status != 0)); then
    fail "$what exited $status"
  elif grep -q "$name" "$scratch/out"; then
    fail "$what complains about $name"
  fi
}

run_checked "systemd-sysusers --dry-run" parley.sysusers \
  systemd-sysusers --root="$root" --dry-run "$deploy_dir/parley.sysusers"
run_checked "systemd-sysusers" parley.sysusers systemd-sysusers --root="$root" "$deploy_dir/parley.sysusers"
grep -q '^parley:x:[0-9]*:[0-9]*:.*:/var/lib/parley:/usr/sbin/nologin$' "$root/etc/passwd" ||
  fail "no parley user with home /var/lib/parley and shell nologin in $(cat "$root/etc/passwd")"

if [[ $(id -u) == 0 ]]; then
  run_checked "systemd-tmpfiles --create" parley.tmpfiles \
    systemd-tmpfiles --root="$root" --create "$deploy_dir/parley.tmpfiles"
  # The host's passwd has no parley (or another one): compare numeric ids.
  uid=$(sed -n 's/^parley:x:\([0-9]*\):.*/\1/p' "$root/etc/passwd" 2>/dev/null || true)
  got=$(stat -c '%a %u' "$root/var/lib/parley" 2>/dev/null || echo missing)
  [[ $got == "700 $uid" ]] || fail "/var/lib/parley should be mode 700, uid $uid (parley); is: $got"
else
  echo "note: not root, systemd-tmpfiles check skipped (it must chown)"
fi

((failed == 0)) && echo "parley.sysusers, parley.tmpfiles: verified"
exit "$failed"
