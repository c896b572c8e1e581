#!/usr/bin/env bash
# The whole test suite from a fresh clone (the README's test command; CI runs it):
#  1. installs the Debian packages (.ci/install-deps.sh),
#  2. builds in build/ (release, every feature found) and runs every test,
#  3. builds in build-asan/ with AddressSanitizer (+LeakSanitizer) and runs every test again
#     (the CUDA tests there skip: that build has no CUDA),
#  4. prints why each skipped test skipped, then one closing line
#     "tests: N passed, N failed, N skipped".
# Tests that need what this machine lacks (a GPU, python3-torch, the shared data set) skip
# with exit code 77 and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
.ci/install-deps.sh

setup() { # setup DIR [meson options...]
  local dir=$1; shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
}

status=0
setup build
ninja -C build
meson test -C build --print-errorlogs --num-processes 1 || status=1

setup build-asan -Dbuildtype=debugoptimized -Db_sanitize=address -Db_lundef=false -Dcuda=disabled
ninja -C build-asan
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export LSAN_OPTIONS=suppressions=$root/tests/lsan.supp:print_suppressions=0
meson test -C build-asan --print-errorlogs --num-processes 1 || status=1

/usr/bin/python3 - build/meson-logs/testlog.json build-asan/meson-logs/testlog.json <<'PY'
import json, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
for path in sys.argv[1:]:
    for line in open(path):
        entry = json.loads(line)
        r = entry["result"]
        key = {"OK": "passed", "SKIP": "skipped", "EXPECTEDFAIL": "passed"}.get(r, "failed")
        counts[key] += 1
        if r == "SKIP":
            said = (entry.get("stdout") or "") + (entry.get("stderr") or "")
            reason = " / ".join(l.strip() for l in said.splitlines() if "skip" in l.lower())
            build = path.split("/")[0]
            print(f"skipped: {entry['name']} ({build}): {reason or said.strip()[-200:] or 'no reason printed'}")
print(f"tests: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
PY
exit $status
