#!/usr/bin/env bash
# Install the Debian packages sluice needs, only those missing.
#   scripts/deps.sh build   compiler, meson, libraries
#   scripts/deps.sh test    + Check, valgrind, servers the tests start
#   scripts/deps.sh bench   + peers the benchmarks measure against
set -euo pipefail

build_pkgs=(gcc libc6-dev pkg-config meson ninja-build libssl-dev libc-ares-dev zlib1g-dev node-llhttp check)
test_pkgs=(valgrind nginx-light openssl curl)
bench_pkgs=(curl wrk hyperfine python3-aiohttp iperf3)

want=()
for group in "${@:-build}"; do
    case "$group" in
    build) want+=("${build_pkgs[@]}") ;;
    test) want+=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
    bench) want+=("${build_pkgs[@]}" "${bench_pkgs[@]}") ;;
    *) echo "deps.sh: unknown group '$group' (build, test, bench)" >&2; exit 2 ;;
    esac
done

missing=()
for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
# Remove duplicates while keeping order.
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
echo "deps.sh: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
