#!/usr/bin/env bash
# Install what is missing, build, and show the main job working. Until the
# HTTP engine lands (issue 3), the main job is the reactor: the demo runs
# examples/reactor-demo (sockets, timers, offloaded work on one loop) and a
# quick run of the timer benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh build
if [ -f build/build.ninja ]; then
    meson setup --reconfigure build >/dev/null
else
    meson setup build >/dev/null
fi
ninja -C build >/dev/null

echo "== examples/reactor-demo"
./build/examples/reactor-demo
echo
echo "== tools/bench-timers --quick"
./build/tools/bench-timers --quick
