#!/usr/bin/env bash
# Builds the .deb with `cpack -G DEB` into a scratch directory and checks it:
# exactly the expected files at the expected paths, the example configuration
# a conffile readable by root and the parley group only, maintainer scripts
# present and executable, Depends computed by dpkg-shlibdeps, and the packaged
# parleyd runs.
#
#   verify_package.sh <build dir>
set -euo pipefail
build_dir=$1
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }

for tool in cpack dpkg-deb dpkg-shlibdeps; do
  command -v "$tool" >/dev/null || { echo "$tool missing (Debian packages: cmake, dpkg-dev)" >&2; exit 1; }
done
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# cpack stages the build tree's install rules (it builds nothing: parleyd must
# be built) under a DESTDIR below -B: nothing is written outside $scratch.
cpack --config "$build_dir/CPackConfig.cmake" -G DEB -B "$scratch/out" \
  >"$scratch/cpack.log" 2>&1 || { cat "$scratch/cpack.log" >&2; exit 1; }
debs=("$scratch"/out/*.deb)
if ((${#debs[@]} != 1)) || [[ ! -f ${debs[0]} ]]; then
  cat "$scratch/cpack.log" >&2
  echo "cpack did not make exactly one .deb" >&2
  exit 1
fi
deb=${debs[0]}
echo "built $(basename "$deb")"

# Regular files only; directories are whatever the paths need.
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sort >"$scratch/files"
cat >"$scratch/expected" <<'LIST'
./etc/parley/parley.toml
./lib/systemd/system/parleyd.service
./usr/bin/parleyd
./usr/lib/sysusers.d/parley.conf
./usr/lib/tmpfiles.d/parley.conf
./usr/share/doc/parley/README.md
LIST
diff -u "$scratch/expected" "$scratch/files" || fail "files in the package differ from the expected list (above)"

dpkg-deb -e "$deb" "$scratch/control"
[[ $(cat "$scratch/control/conffiles") == /etc/parley/parley.toml ]] ||
  fail "conffiles should list /etc/parley/parley.toml only: $(cat "$scratch/control/conffiles" 2>/dev/null)"
for script in postinst prerm postrm; do
  [[ -x $scratch/control/$script ]] || fail "maintainer script $script missing or not executable"
done

field() { dpkg-deb -f "$deb" "$1"; }
[[ $(field Package) == parley ]] || fail "Package: $(field Package)"
[[ -n $(field Maintainer) && -n $(field Description) && -n $(field Version) ]] ||
  fail "Maintainer, Description or Version empty"
depends=$(field Depends)
for library in libc6 libstdc++6 libpqxx libsqlite3 libsystemd0 libssl3 libjwt systemd; do
  [[ $depends == *"$library"* ]] || fail "Depends lacks $library (dpkg-shlibdeps): $depends"
done

dpkg -x "$deb" "$scratch/root"
[[ $(stat -c %a "$scratch/root/etc/parley/parley.toml") == 640 ]] ||
  fail "/etc/parley/parley.toml mode $(stat -c %a "$scratch/root/etc/parley/parley.toml"), want 640"
[[ -x $scratch/root/usr/bin/parleyd ]] || fail "/usr/bin/parleyd not executable"
"$scratch/root/usr/bin/parleyd" version >"$scratch/version" 2>&1 || fail "packaged parleyd version failed: $(cat "$scratch/version")"
# The shipped configuration's secrets are public placeholders: the packaged
# parleyd must refuse to run with them until they are replaced.
if env -u PARLEY_TENANT_ACME_ADMIN_TOKEN -u PARLEY_TENANT_ACME_AGENT_SECRET -u PARLEY_TENANT_ACME_WIDGET_SECRET \
  "$scratch/root/usr/bin/parleyd" -c "$scratch/root/etc/parley/parley.toml" check-config \
  >"$scratch/check" 2>&1; then
  fail "packaged parleyd accepted the placeholder secrets of /etc/parley/parley.toml"
elif ! grep -q "placeholder" "$scratch/check"; then
  fail "check-config of the packaged config failed without naming the placeholders: $(cat "$scratch/check")"
fi
cmp -s "$scratch/root/lib/systemd/system/parleyd.service" "$(dirname "$0")/../../deploy/parleyd.service" ||
  fail "packaged unit differs from deploy/parleyd.service"

((failed == 0)) && echo "$(basename "$deb"): verified ($(field Version); Depends: $depends)"
exit "$failed"
