#!/usr/bin/env bash
# Install what is missing, build, and show the main job: many URLs fetched
# concurrently from a local server by the sluice CLI, failures reported
# precisely, a large download streamed to disk; then quick runs of the
# timer benchmark and of bench-seed (sequential vs thread pool vs async). Everything runs on 127.0.0.1 and is cleaned up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh build
if [ -f build/build.ninja ]; then
    meson setup --reconfigure build >/dev/null
else
    meson setup build >/dev/null
fi
ninja -C build >/dev/null

work=$(mktemp -d /tmp/sluice-demo-XXXXXX)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Our fault-injecting test server, on a free loopback port; it exits by
# itself after two minutes whatever happens.
coproc SERVER { exec ./build/tests/integ/faultserver --host 127.0.0.1 --max-seconds 120; }
server_pid=$SERVER_PID
read -r _ port <&"${SERVER[0]}"
base="http://127.0.0.1:$port"
sluice=./build/tools/sluice

echo "== sluice $($sluice --version | head -1 | cut -d' ' -f2-)"
echo "== 500 URLs, 50 at a time, from $base"
# A mix a real crawl meets: small and large bodies, chunked, gzip, slow
# answers (50 ms), redirects.
for i in $(seq 1 100); do
    echo "$base/bytes/$((i * 997))?n=$i"
    echo "$base/bytes/20000?chunked=1&n=$i"
    echo "$base/gzip?n=50000&i=$i"
    echo "$base/delay/50?n=$i"
    echo "$base/redirect/2?n=$i"
done >"$work/urls.txt"
start=$(date +%s.%N)
$sluice -s -Z --parallel-max 50 -L --compressed -i "$work/urls.txt" \
    --json-report "$work/report.json" >/dev/null
end=$(date +%s.%N)
python3 - "$work/report.json" "$start" "$end" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
wall = float(sys.argv[3]) - float(sys.argv[2])
ok = sum(1 for r in rows if r["exitcode"] == 0)
size = sum(r["size_download"] for r in rows)
redirs = sum(r["num_redirects"] for r in rows)
slow = [r["time_total"] for r in rows if "/delay/" in r["url"]]
print(f"   {ok}/{len(rows)} succeeded, {size / 1e6:.1f} MB decoded, {redirs} redirects followed")
print(f"   wall {wall * 1000:.0f} ms for 100 answers that each wait 50 ms "
      f"(one after another: {100 * 0.05 * 1000:.0f} ms)")
print(f"   slowest delayed answer {max(slow) * 1000:.0f} ms")
PY

echo "== failures are reported with the URL, the cause and curl's exit code"
for path in /wrong-cl /truncated-chunked /conflict-cl /stall-head /status/503; do
    set +e
    $sluice -sS -f --max-time 0.5 -o "$work/out.bin" "$base$path"
    rc=$?
    set -e
    left=$(ls "$work" | grep -c 'out.bin' || true)
    echo "   exit $rc; files left under the output name: $left"
done

echo "== 100 MB streamed to disk (written as .sluice-part, renamed on success)"
$sluice -sS -o "$work/big.bin" -w '   %{size_download} bytes in %{time_total} s\n' "$base/bytes/100000000"
ls -l "$work/big.bin" | awk '{print "   " $5 " bytes on disk"}'

echo
echo "== tools/bench-timers --quick"
./build/tools/bench-timers --quick | tail -20

echo
echo "== tools/bench-seed --quick: sequential vs thread pool vs async (100 x 50 ms, 10000 x 50 ms)"
./build/tools/bench-seed --quick | grep -v '^bench=seed'

