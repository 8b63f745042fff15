#!/usr/bin/env bash
# Hit throughput and latency: one purgecast node's edge and Varnish, side by
# side in front of the same origin, 1 KiB and 1 MiB objects.
#
#   tests/bench/edge-vs-varnish.sh [BIN_DIR]      # default target/release
#
# Needs wrk and varnishd (Debian: apt-get install -y wrk varnish). Binds
# 127.0.0.1 only, stops what it started on exit. Each round runs every case
# once, targets interleaved, so a burst of load from elsewhere on a shared
# machine hits both caches rather than one. Prints one line per wrk run, then
# the medians over the rounds.
#
# Env: ROUNDS (3), DURATION (10s), THREADS (2), CONNS (32), BASE (17100: the
# node's ports are BASE..BASE+3000, the origin BASE+800, Varnish BASE+801).
set -euo pipefail

BIN=${1:-target/release}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
BASE=${BASE:-17100}
ORIGIN_PORT=$((BASE + 800))
VARNISH_PORT=$((BASE + 801))
EDGE_PORT=$((BASE + 3000))
WORK=$(mktemp -d /tmp/edgebench.XXXXXX)
HOST=bench.test
PIDS=()

cleanup() {
    # Reverse order: the caches before the origin they talk to.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill "${PIDS[i]}" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    # The node processes `dev` started, in case it could not stop them.
    for pid in $(grep -o ' pid [0-9]*' "$WORK/dev.log" 2>/dev/null | awk '{ print $2 }'); do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

wait_for() { # url, what
    for _ in $(seq 100); do
        curl -s -o /dev/null -m 1 -H "Host: $HOST" "$1" && return 0
        sleep 0.1
    done
    echo "$2 did not come up" >&2
    exit 1
}

# The origin's max-age is an hour so that no object expires between its
# warming request and the end of the rounds (with 60 s, a later round would
# measure a refetch on one side and a grace-mode hit on the other).
"$BIN/purgecast" origin --listen "127.0.0.1:$ORIGIN_PORT" --max-age 3600 >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$ORIGIN_PORT/" origin

# One node with its edge in front of the origin (`dev` starts the node
# process and stays in the foreground; stopping it stops the node).
"$BIN/purgecast" dev --nodes 1 --fresh --dir "$WORK/dev" --base-port "$BASE" \
    --origin "http://127.0.0.1:$ORIGIN_PORT" >"$WORK/dev.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$EDGE_PORT/" "purgecast edge"

# Debian's Varnish, default VCL, the same origin as its backend.
varnishd -a "127.0.0.1:$VARNISH_PORT" -b "127.0.0.1:$ORIGIN_PORT" -s malloc,256m \
    -n "$WORK/varnish" -F >"$WORK/varnish.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$VARNISH_PORT/" varnish

# Warms one cache with one request, then checks the next one is a hit.
warm() { # name, url
    curl -s -o /dev/null -H "Host: $HOST" "$2"
    local head
    head=$(curl -s -o /dev/null -D - -H "Host: $HOST" "$2" | tr -d '\r')
    case $1 in
    purgecast) grep -qi '^cache-status: purgecast; hit$' <<<"$head" ;;
    # X-Varnish carries two ids (this request's and the object's) on a hit.
    varnish) grep -qiE '^x-varnish: [0-9]+ [0-9]+$' <<<"$head" ;;
    esac || { echo "$1 does not answer $2 from cache:" >&2; echo "$head" >&2; exit 1; }
}

# wrk's latencies come as 512.00us, 1.20ms or 1.05s; everything in ms.
to_ms() {
    awk '{ v = $1 + 0; if ($1 ~ /us$/) v /= 1000; else if ($1 ~ /[0-9]s$/ && $1 !~ /ms$/) v *= 1000; printf "%.3f", v }' <<<"$1"
}

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency -H 'Host: $HOST' URL"
RESULTS=$WORK/results.tsv
for round in $(seq "$ROUNDS"); do
    for size in 1024 1048576; do
        for target in purgecast varnish; do
            port=$EDGE_PORT
            [ "$target" = varnish ] && port=$VARNISH_PORT
            url="http://127.0.0.1:$port/obj/$size?size=$size"
            warm "$target" "$url"
            out=$(timeout 120 wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "Host: $HOST" "$url")
            rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
            p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
            p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
            errs=$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ' | paste -sd';' || true)
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$size" "$target" "$rps" "$p50" "$p99" >>"$RESULTS"
            printf 'round %s size %-7s %-9s %10.0f req/s  P50 %8.3f ms  P99 %8.3f ms  load %s %s\n' \
                "$round" "$size" "$target" "$rps" "$p50" "$p99" "$(cut -d' ' -f1 /proc/loadavg)" "$errs"
        done
    done
done

echo "medians over $ROUNDS rounds:"
for size in 1024 1048576; do
    for target in purgecast varnish; do
        med() { # column
            awk -F'\t' -v s="$size" -v t="$target" -v c="$1" '$2 == s && $3 == t { print $c }' "$RESULTS" |
                sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
        }
        printf 'size %-7s %-9s %10.0f req/s  P50 %8.3f ms  P99 %8.3f ms\n' \
            "$size" "$target" "$(med 4)" "$(med 5)" "$(med 6)"
    done
done
