#!/usr/bin/env bash
# Tests across containers: builds the image (deploy/build-image.sh), starts
# the 5-node compose cluster (deploy/compose) under a unique project name and
# drives it from the host with purgectl:
#   1. entries indexed on every node; a purge by tag with --wait: 5/5 apply;
#   2. `docker kill` one node, purge, start it again: it applies the purge it
#      missed (and kept its other entries);
#   3. `docker network disconnect` one node, purge (it does not apply while
#      cut off), reconnect: it catches up and is alive again;
#   4. `stop` (every node exits 0), `down` keeping volumes, `up` again: data
#      and purges survived, and the cluster still purges 5/5;
#   5. the HTTP edges in front of the demo origin: a miss then a hit on each
#      node (Cache-Status), a purge by tag through node-2, then a miss on
#      every node;
#   6. the Cloudflare-shaped HTTP purge API of node-4 (curl): a purge by URL,
#      then a miss on every edge.
# Everything the test created is removed at the end, also on failure.
#
#   deploy/test/container-test.sh [--profile debug|release]
#
# Without a usable docker engine it prints SKIP and exits 0, unless
# PURGECAST_REQUIRE_DOCKER=1. Measurements (image size, start-up times) are
# printed at the end.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
profile="${PURGECAST_PROFILE:-debug}"
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:?}"; shift 2 ;;
    --profile=*) profile="${1#*=}"; shift ;;
    *) echo "container-test: unknown argument: $1" >&2; exit 1 ;;
  esac
done

log() { printf '[container-test %s] %s\n' "$(date +%T)" "$*"; }
fail() { log "FAIL: $*"; exit 1; }
skip() {
  if [ "${PURGECAST_REQUIRE_DOCKER:-0}" = 1 ]; then fail "docker required but unusable: $*"; fi
  echo "SKIP container tests: $*"
  exit 0
}

command -v docker >/dev/null || skip "no docker command"
docker_err="$(docker info 2>&1 >/dev/null)" || skip "docker info failed: ${docker_err//$'\n'/ }"
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  skip "neither 'docker compose' nor 'docker-compose' is available"
fi
for tool in curl python3 timeout; do command -v "$tool" >/dev/null || fail "$tool is required"; done

source "$root/deploy/test/lib.sh"

image="${PURGECAST_IMAGE:-purgecast:dev}"
export PURGECAST_IMAGE="$image"
purgectl="${CARGO_TARGET_DIR:-$root/target}/$profile/purgectl"
compose_file="$root/deploy/compose/docker-compose.yml"
project="purgecast-test-$$-$RANDOM"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/purgecast-ctest.XXXXXX")"
NODES=(1 2 3 4 5)

C() { "${compose[@]}" -p "$project" -f "$compose_file" "$@"; }

cleanup() {
  local rc=$?
  set +e
  if [ "$rc" != 0 ]; then
    log "failed (exit $rc); container states and recent logs:"
    C ps 2>&1 | sed 's/^/    /'
    C logs --no-color --tail 40 2>&1 | sed 's/^/    /'
  fi
  teardown >/dev/null 2>&1
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pick_ports

# ------------------------------------------------------------------ image
log "building image $image (profile $profile)"
"$root/deploy/build-image.sh" --profile "$profile" --tag "$image"
[ -x "$purgectl" ] || fail "$purgectl not found"
image_bytes="$(docker image inspect -f '{{.Size}}' "$image")"

# ------------------------------------------------------------------ config
log "compose project $project"
C config -q || fail "compose file does not validate"
log "certificates: ${compose[*]} run --rm certs"
C run --rm certs >"$tmp/certs.out" 2>&1 || { cat "$tmp/certs.out"; fail "certs"; }
printed="$(C run --rm --no-deps node-1 run --print-config 2>"$tmp/print.err")" ||
  { cat "$tmp/print.err"; fail "node-1 refuses its configuration in the container"; }
grep -qx 'name = "node-1"' <<<"$printed" || fail "node-1's effective config has the wrong name: $printed"
grep -qx 'advertise_peer = "node-1:7200"' <<<"$printed" || fail "node-1 does not advertise node-1:7200"

# ------------------------------------------------------------------ start
log "starting the cluster"
t0="$(now_ms)"
C up -d >"$tmp/up.out" 2>&1 || { cat "$tmp/up.out"; fail "compose up"; }
wait_cluster_ready 120 "$(api_port 1)"
startup_ms=$(( $(now_ms) - t0 ))
log "5 nodes ready and node-1 sees 5 alive members after ${startup_ms} ms"
for i in "${NODES[@]}"; do
  wait_until "node-$i sees 5 alive members" 60 alive_is "$(api_port "$i")" 5
done

# ------------------------------------------------------------------ 1. purge --wait
cat >"$tmp/entries.jsonl" <<'EOF'
{"key":"https://shop.example/cart.js","tags":["release-42"],"size":100}
{"key":"https://shop.example/logo.png","tags":["brand"],"size":200}
{"key":"https://shop.example/kill.js","tags":["kill-test"],"size":300}
{"key":"https://shop.example/part.js","tags":["part-test"],"size":400}
EOF
for i in "${NODES[@]}"; do
  pc "$(api_port "$i")" index put --file "$tmp/entries.jsonl" >/dev/null || fail "index put on node-$i"
  [ "$(count_on "$(api_port "$i")")" = 4 ] || fail "node-$i does not hold the 4 entries"
done
log "step 1: purge --tag release-42 --wait through node-3"
out="$(pc "$(api_port 3)" --json purge --tag release-42 --wait --timeout 30s)" || fail "purge --wait: $out"
[ "$(json "$out" 'd["members_applied"]')" = 5 ] || fail "purge applied by fewer than 5: $out"
[ "$(json "$out" 'd["members_total"]')" = 5 ] || fail "purge counted other than 5 members: $out"
[ "$(json "$out" 'd["complete"]')" = True ] || fail "purge not complete: $out"
for i in "${NODES[@]}"; do
  [ "$(entry_on "$(api_port "$i")" https://shop.example/cart.js)" = missing ] || fail "cart.js survived on node-$i"
  [ "$(entry_on "$(api_port "$i")" https://shop.example/logo.png)" = found ] || fail "logo.png lost on node-$i"
done
log "step 1: applied by 5/5 in $(json "$out" 'd["completion_ms"]') ms"

# ------------------------------------------------------------------ 2. kill
node4="$(cid node-4)"
log "step 2: docker kill node-4, purge --tag kill-test through node-1"
docker kill "$node4" >/dev/null
out="$(pc "$(api_port 1)" --json purge --tag kill-test)" || fail "purge with node-4 down: $out"
kill_id="$(json "$out" 'd["id"]')"
for i in 1 2 3 5; do
  wait_until "node-$i applies the kill-test purge" 30 entry_is "$(api_port "$i")" https://shop.example/kill.js missing
done
[ "$(docker inspect -f '{{.State.Running}}' "$node4")" = false ] || fail "node-4 is running: the kill did not hold"
docker start "$node4" >/dev/null
wait_until "node-4 ready again" 60 ready "$(metrics_port 4)"
wait_until "node-4 catches up on the purge it missed" 60 entry_is "$(api_port 4)" https://shop.example/kill.js missing
[ "$(entry_on "$(api_port 4)" https://shop.example/logo.png)" = found ] || fail "node-4 lost logo.png across the kill"
wait_until "node-1 (origin) records node-4's apply of $kill_id" 60 applied_by "$(api_port 1)" "$kill_id" node-4
log "step 2: node-4 restarted and applied the purge it missed"

# ------------------------------------------------------------------ 3. partition
net="$(docker network ls -q --filter "label=com.docker.compose.project=$project")"
[ "$(wc -w <<<"$net")" = 1 ] || fail "expected one network of project $project, found: $net"
node5="$(cid node-5)"
log "step 3: docker network disconnect node-5, purge --tag part-test through node-2"
docker network disconnect "$net" "$node5"
out="$(pc "$(api_port 2)" --json purge --tag part-test)" || fail "purge with node-5 cut off: $out"
part_id="$(json "$out" 'd["id"]')"
for i in 1 2 3 4; do
  wait_until "node-$i applies the part-test purge" 30 entry_is "$(api_port "$i")" https://shop.example/part.js missing
done
# Cut off, node-5 cannot have heard of the purge (checked from inside it).
sleep 2
[ "$(entry_in "$node5" https://shop.example/part.js)" = found ] || fail "node-5 applied the purge while cut off"
docker network connect --alias node-5 "$net" "$node5"
wait_until "node-5 catches up after the partition" 90 entry_in_is "$node5" https://shop.example/part.js missing
wait_until "node-1 sees node-5 alive again" 60 member_state_is "$(api_port 1)" node-5 alive
wait_until "node-2 (origin) records node-5's apply of $part_id" 60 applied_by "$(api_port 2)" "$part_id" node-5
log "step 3: node-5 reconnected and applied the purge it missed"

# ------------------------------------------------------------------ 4. restart
log "step 4: compose stop (SIGTERM), down (volumes kept), up"
t0="$(now_ms)"
C stop -t 20 >"$tmp/stop.out" 2>&1 || { cat "$tmp/stop.out"; fail "compose stop"; }
stop_ms=$(( $(now_ms) - t0 ))
for i in "${NODES[@]}"; do
  code="$(docker inspect -f '{{.State.ExitCode}}' "$(cid "node-$i")")"
  [ "$code" = 0 ] || fail "node-$i exited with $code on SIGTERM"
done
C down >"$tmp/down.out" 2>&1 || { cat "$tmp/down.out"; fail "compose down"; }
[ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$project")" ] || fail "containers left after down"
[ "$(project_volumes | wc -l)" = 6 ] || fail "down did not keep the 6 volumes: $(project_volumes | tr '\n' ' ')"
t0="$(now_ms)"
C up -d >"$tmp/up2.out" 2>&1 || { cat "$tmp/up2.out"; fail "compose up after down"; }
wait_cluster_ready 120 "$(api_port 1)"
restart_ms=$(( $(now_ms) - t0 ))
for i in "${NODES[@]}"; do
  p="$(api_port "$i")"
  [ "$(entry_on "$p" https://shop.example/logo.png)" = found ] || fail "node-$i lost logo.png across the restart"
  for gone in cart kill part; do
    [ "$(entry_on "$p" "https://shop.example/$gone.js")" = missing ] || fail "$gone.js came back on node-$i"
  done
  [ "$(count_on "$p")" = 1 ] || fail "node-$i holds $(count_on "$p") entries after the restart, expected 1"
done
for i in "${NODES[@]}"; do
  wait_until "node-$i sees 5 alive members after the restart" 60 alive_is "$(api_port "$i")" 5
done
out="$(pc "$(api_port 5)" --json purge --tag brand --wait --timeout 30s)" || fail "purge after restart: $out"
[ "$(json "$out" 'd["members_applied"]')" = 5 ] || fail "purge after restart not applied by 5: $out"
log "step 4: data and purges survived the restart; a new purge applied 5/5"

# ------------------------------------------------------------------ 5. edge
log "step 5: the edges cache the demo origin's objects; a purge by tag through node-2 reaches every edge"
for i in "${NODES[@]}"; do
  wait_until "node-$i's edge has caught up" 60 edge_caught_up "$i"
done
obj="/edge/app.js?tags=edge-test"
for i in "${NODES[@]}"; do
  s="$(cache_status "$i" "$obj")"
  is_miss "$s" || fail "the first GET through node-$i's edge is not a miss: Cache-Status '$s'"
  s="$(cache_status "$i" "$obj")"
  is_hit "$s" || fail "the second GET through node-$i's edge is not a hit: Cache-Status '$s'"
done
out="$(pc "$(api_port 2)" --json purge --tag edge-test --wait --timeout 30s)" || fail "edge purge: $out"
[ "$(json "$out" 'd["members_applied"]')" = 5 ] || fail "edge purge applied by fewer than 5: $out"
for i in "${NODES[@]}"; do
  s="$(cache_status "$i" "$obj")"
  is_miss "$s" || fail "node-$i's edge still serves the purged object: Cache-Status '$s'"
done
log "step 5: miss, hit, then after the purge (5/5 in $(json "$out" 'd["completion_ms"]') ms) a miss on every edge"

# ------------------------------------------------------------------ 6. HTTP API
log "step 6: a purge by URL through node-4's Cloudflare-shaped HTTP API"
obj="/edge/api.css"
for i in "${NODES[@]}"; do
  cache_status "$i" "$obj" >/dev/null
  s="$(cache_status "$i" "$obj")"
  is_hit "$s" || fail "node-$i's edge did not cache $obj: Cache-Status '$s'"
done
body='{"files":["http://shop.example/edge/api.css"]}'
out="$(timeout 20 curl -sS -X POST "http://127.0.0.1:$(http_api_port 4)/client/v4/zones/default/purge_cache" \
  -H 'content-type: application/json' -d "$body")" || fail "HTTP API purge: $out"
[ "$(json "$out" 'd["success"]')" = True ] || fail "HTTP API purge refused: $out"
purge_id="$(json "$out" 'd["result"]["id"]')"
for i in "${NODES[@]}"; do
  wait_until "node-$i's edge misses $obj" 30 edge_misses "$i" "$obj"
done
log "step 6: purge $purge_id accepted over HTTP; every edge misses"

# ------------------------------------------------------------------ teardown
teardown
[ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$project")" ] || fail "containers left"
[ -z "$(project_volumes)" ] || fail "volumes left: $(project_volumes | tr '\n' ' ')"
[ -z "$(docker network ls -q --filter "label=com.docker.compose.project=$project")" ] || fail "networks left"

log "PASS"
echo "image $image: $((image_bytes / 1024 / 1024)) MiB ($image_bytes bytes, profile $profile)"
echo "cluster start-up (up -d until 5 ready, 5 alive at node-1): ${startup_ms} ms"
echo "cluster restart with existing volumes (up -d until ready): ${restart_ms} ms"
echo "clean stop (compose stop, SIGTERM, all exit 0): ${stop_ms} ms"
