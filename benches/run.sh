#!/usr/bin/env bash
# Runs every codec benchmark in one go and prints everything:
#   1. the main crate's `codec` bench (TLV and SenML-CBOR decode/encode, ciborium
#      and minicbor baselines); it also checks benches/senml-deser/data/*.cbor;
#   2. the separate senml-deser package (benches/senml-deser), decoding those files.
# Extra arguments go to both bench binaries (divan options, e.g. `--sample-count 50`
# or a filter). Set NICE=0 to run at normal priority.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
nice_level="${NICE:-10}"
run() {
    echo "+ $*" >&2
    nice -n "$nice_level" "$@"
}

echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "== $(cargo --version), $(rustc --version)"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
    echo "== lwm2m-fota at $(git -C "$root" log -1 --format='%h %s')"
    changed="$(git -C "$root" status --short -- src Cargo.toml Cargo.lock)"
    [ -z "$changed" ] || printf '== uncommitted changes in the measured code:\n%s\n' "$changed"
fi

echo
echo "== lwm2m-fota: cargo bench --bench codec"
(cd "$root" && run cargo bench --bench codec -- "$@")

echo
echo "== senml-deser 0.2.1: cargo bench (benches/senml-deser)"
(cd "$root/benches/senml-deser" && run cargo bench --bench decode -- "$@")

echo
echo "== done; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
