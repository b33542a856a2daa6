#!/usr/bin/env bash
# The figures of the store's durability modes: scenario S2 (50 rooms x 10
# clients, 30 Hz ticks) plus 20 state updates per second per room, against
# the release `chorus` binary started once per mode (`none`, `interval`,
# `sync`) on a fresh data directory, over WebTransport and WebSocket.
#
#   bench/scripts/durability.sh [DURATION_SECS] [JSON_OUT] [BENCH_ARGS...]
#
# Prints the bench's table per run and appends its JSON lines to JSON_OUT
# (default bench/results/durability.jsonl). BENCH_ARGS go to chorus-bench
# after the scenario's, e.g. `--hz 0` for the state updates alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-15}
json_out=${2:-bench/results/durability.jsonl}
shift $(($# < 2 ? $# : 2))
mkdir -p "$(dirname "$json_out")"
cargo build --release --locked -p chorus-server -p chorus-bench

for mode in none interval sync; do
    work=$(mktemp -d)
    # Per-address limits are for the internet; the bench is 500 connections
    # from one loopback address.
    target/release/chorus --listen 127.0.0.1:0 --no-demo --log warn \
        --cert-dir "$work/certs" --data-dir "$work/data" --durability "$mode" \
        --max-connections-per-ip 100000 --connections-per-ip-per-minute 100000 \
        --joins-per-ip-per-minute 100000 > "$work/banner" &
    pid=$!
    for _ in $(seq 200); do
        grep -q '^certificate sha256:' "$work/banner" 2>/dev/null && break
        sleep 0.05
    done
    url=$(grep -o 'https://127.0.0.1:[0-9]*/chorus' "$work/banner" | head -1)
    hash=$(sed -n 's/^certificate sha256: //p' "$work/banner")
    echo "== durability $mode ($url, pid $pid)"
    target/release/chorus-bench --url "$url" --cert-hash "$hash" --server-pid "$pid" \
        --scenario s2 --state-rate 20 --duration "$duration" --transport both \
        --json-out "$json_out" "$@"
    port=${url#https://127.0.0.1:}
    port=${port%/chorus}
    if command -v curl >/dev/null 2>&1; then
        curl -s "http://127.0.0.1:$port/metrics" \
            | grep -E '^chorus_store_(commits|writes|commit_failures)_total|^chorus_store_commit_duration_seconds_(sum|count)' \
            | sed 's/^/   /' || true
    fi
    kill -TERM "$pid"
    wait "$pid" || true
    echo "   data directory after the runs: $(du -sh "$work/data" | cut -f1)"
    rm -rf "$work"
done
