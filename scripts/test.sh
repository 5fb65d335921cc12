#!/usr/bin/env bash
# Build everything and run the whole test suite:
#   1. a release-like build with warnings as errors, every suite on every
#      backend compiled in (epoll and poll on Linux);
#   2. the same suites under AddressSanitizer + UndefinedBehaviorSanitizer;
#   3. the unit suites under valgrind (memcheck, leaks are errors).
# Ends with one line "N passed, N failed" over all three runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh test

jobs=$(nproc 2>/dev/null || echo 2)
passed=0
failed=0

count() { # add up the results in meson's JSON test log $1
    local counts
    counts=$(python3 - "$1" <<'PY'
import json, sys
ok = bad = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("result") in ("OK", "EXPECTEDFAIL"):
        ok += 1
    elif r.get("result") != "SKIP":
        bad += 1
print(ok, bad)
PY
)
    passed=$((passed + ${counts% *}))
    failed=$((failed + ${counts#* }))
}

setup() { # setup DIR ARGS...: configure once, reconfigure after
    local dir=$1
    shift
    if [ -f "$dir/build.ninja" ]; then
        meson setup --reconfigure "$dir" "$@" >/dev/null
    else
        meson setup "$dir" "$@" >/dev/null
    fi
}

status=0

echo "== build (warnings are errors)"
setup build -Dwerror=true
ninja -C build
meson test -C build --print-errorlogs --num-processes "$jobs" || status=1
count build/meson-logs/testlog.json

echo "== ASan + UBSan"
setup build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debug -Dbenchmarks=false
ninja -C build-asan
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C build-asan --print-errorlogs --num-processes "$jobs" || status=1
count build-asan/meson-logs/testlog.json

echo "== valgrind (unit suites, epoll)"
meson test -C build --setup valgrind --suite unit-epoll --print-errorlogs \
    --num-processes "$jobs" || status=1
count build/meson-logs/testlog-valgrind.json

echo "$passed passed, $failed failed"
exit $status
