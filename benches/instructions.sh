#!/usr/bin/env bash
# Deterministic companion to run.sh: instructions executed per iteration of each
# decode benchmark (and its baselines), counted by valgrind's cachegrind. Unlike
# wall time these do not move with the load of whoever shares the machine, so
# they give a noise-free cross-check of the ratios in BENCHMARKS.md (instructions
# are not time: allocation-heavy or branchy code runs at another IPC).
#
# Each benchmark runs twice with a fixed sample size (10 x 100 and 10 x 1100
# iterations); the difference divided by 10,000 is the cost of one iteration,
# set-up excluded. Needs valgrind (apt-get install valgrind). Takes about 4 minutes.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }

# executable DIR BENCH: builds a bench target of the package in DIR and prints
# the absolute path of its executable.
executable() {
    local path
    path=$( (cd "$1" && nice -n 10 cargo bench --bench "$2" --no-run 2>&1) |
        sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
    case "$path" in /*) echo "$path" ;; *) echo "$1/$path" ;; esac
}

refs() {
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$@" 2>&1 |
        sed -n 's/.*I *refs: *//p' | tr -d ,
}

# per_iteration BINARY DIR FILTER [LABEL]: instructions per iteration of the
# benchmark whose full name matches FILTER (a divan regex).
per_iteration() {
    local bin="$1" dir="$2" filter="$3" label="${4:-$3}" small large
    small=$(cd "$dir" && refs "$bin" --bench "$filter" --sample-count 10 --sample-size 100 --min-time 0 --max-time 1000)
    large=$(cd "$dir" && refs "$bin" --bench "$filter" --sample-count 10 --sample-size 1100 --min-time 0 --max-time 1000)
    printf '%-48s %10d\n' "${label%$}" $(((large - small) / 10000))
}

codec="$(executable "$root" codec)"
senml_deser_dir="$root/benches/senml-deser"
decode="$(executable "$senml_deser_dir" decode)"

echo "== instructions per iteration ($(valgrind --version))"
for pack in a_device b_firmware c_send50 d_package64k; do
    per_iteration "$codec" "$root" "decode::tlv::$pack$"
done
for pack in a_device a_device_no22 b_firmware c_send50 d_package64k; do
    for bench in decode::senml_cbor baseline::ciborium_value baseline::minicbor_tokens baseline::minicbor_skip; do
        per_iteration "$codec" "$root" "$bench::$pack$"
    done
done
for bench in decode_cbor::a_device_no22 decode_cbor::b_firmware decode_cbor::d_package64k \
    decode_pack64::a_device_no22 decode_pack64::b_firmware decode_pack64::c_send50 decode_pack64::d_package64k \
    decode_resolve::a_device_no22 decode_resolve::b_firmware decode_resolve::c_send50 decode_resolve::d_package64k; do
    per_iteration "$decode" "$senml_deser_dir" "$bench$" "senml-deser::$bench"
done
