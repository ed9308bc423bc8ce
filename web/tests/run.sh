#!/bin/sh
# Runs one browser test file (web/tests/<name>.test.mjs) for ctest: node --test
# against the real parleyd ($PARLEYD) in Debian's Chromium. Exits 77 (ctest
# SKIP) when node, Chromium or web/node_modules are missing, unless
# PARLEY_REQUIRE_BROWSER=1 (quickstart.sh test sets it), where that is a failure.
here=$(cd "$(dirname "$0")" && pwd)
missing=""
command -v node >/dev/null 2>&1 || missing="node"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -d "$here/../node_modules/playwright-core" ] || missing="$missing web/node_modules (run: npm ci in web/)"
if [ -n "$missing" ]; then
  echo "browser tests need:$missing" >&2
  [ "${PARLEY_REQUIRE_BROWSER:-0}" = 1 ] && exit 1
  exit 77
fi
exec node --test "$here/$1.test.mjs"
