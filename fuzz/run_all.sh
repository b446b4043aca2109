#!/usr/bin/env bash
# Runs the fuzz targets one after another (never two at once), niced, on stable
# Rust (`-s none`: no sanitizer, so no nightly), each for RUNS executions,
# logging to fuzz/logs/<target><LOG_SUFFIX>.log.
#
#   fuzz/run_all.sh [TARGET...]     (default: every target)
#   RUNS=10000000 EXTRA="-use_value_profile=1" LOG_SUFFIX=.vp fuzz/run_all.sh tlv
set -u
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10000000}
EXTRA=${EXTRA:-}
LOG_SUFFIX=${LOG_SUFFIX:-}
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(tlv senml_cbor senml_json lwm2m_cbor lwm2m_json text opaque cbor senml_paths)
mkdir -p fuzz/logs
for t in "${targets[@]}"; do
    log=fuzz/logs/$t$LOG_SUFFIX.log
    start=$(date +%s)
    echo "== $t start $(date -u +%FT%TZ) runs=$RUNS extra=$EXTRA" | tee "$log"
    # shellcheck disable=SC2086
    nice -n 15 cargo fuzz run -s none "$t" -- \
        -runs="$RUNS" -max_len=4096 -print_final_stats=1 $EXTRA >>"$log" 2>&1
    rc=$?
    echo "== $t exit $rc wall $(( $(date +%s) - start ))s end $(date -u +%FT%TZ)" | tee -a "$log"
done
