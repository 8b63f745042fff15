# shellcheck shell=bash
# shellcheck disable=SC2154 # purgectl, project, NODES, C, log, fail: set by container-test.sh
# Helpers of container-test.sh (sourced). Every wait is bounded by a count
# and by time; every purgectl call by `timeout`.

now_ms() { date +%s%3N; }

# Node i's published ports. Defaults are the compose file's (710i, 730i,
# 740i, 750i); another base is taken when something on the host already listens
# there.
pick_ports() {
  local base busy i off
  for base in 7100 27100 37100; do
    busy=0
    for i in "${NODES[@]}"; do
      for off in 0 200 300 400; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$((base + off + i))") 2>/dev/null; then busy=1; fi
      done
      [ "$busy" = 0 ] || break
    done
    if [ "$busy" = 0 ]; then
      for i in "${NODES[@]}"; do
        export "PURGECAST_API_PORT_$i=$((base + i))" "PURGECAST_METRICS_PORT_$i=$((base + 200 + i))" \
          "PURGECAST_EDGE_PORT_$i=$((base + 300 + i))" "PURGECAST_HTTP_API_PORT_$i=$((base + 400 + i))"
      done
      log "published ports: gRPC 127.0.0.1:$((base + 1))-$((base + 5)), metrics 127.0.0.1:$((base + 201))-$((base + 205))," \
        "edge 127.0.0.1:$((base + 301))-$((base + 305))"
      return 0
    fi
  done
  fail "no free port range for the cluster (tried 7100, 27100, 37100)"
}

api_port() { local v="PURGECAST_API_PORT_$1"; echo "${!v}"; }
metrics_port() { local v="PURGECAST_METRICS_PORT_$1"; echo "${!v}"; }
edge_port() { local v="PURGECAST_EDGE_PORT_$1"; echo "${!v}"; }
http_api_port() { local v="PURGECAST_HTTP_API_PORT_$1"; echo "${!v}"; }

# purgectl against a published gRPC port.
pc() {
  local port="$1"
  shift
  timeout 40 "$purgectl" --endpoint "http://127.0.0.1:$port" "$@"
}

# json TEXT EXPR: evaluates EXPR on the JSON object d.
json() {
  python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null
}

# found | missing | error, from `index get --json` (exit 1 when not found).
get_state() {
  local out="$1"
  case "$(json "$out" 'd["found"]')" in
    True) echo found ;;
    False) echo missing ;;
    *) echo error ;;
  esac
}
entry_on() { get_state "$(pc "$1" --json index get "$2" 2>/dev/null || true)"; }
entry_is() { [ "$(entry_on "$1" "$2")" = "$3" ]; }
# The same, from inside a container (works while it is cut off the network).
entry_in() {
  get_state "$(timeout 40 docker exec "$1" /usr/local/bin/purgectl --endpoint http://127.0.0.1:7100 \
    --json index get "$2" 2>/dev/null || true)"
}
entry_in_is() { [ "$(entry_in "$1" "$2")" = "$3" ]; }
count_on() { json "$(pc "$1" --json index count 2>/dev/null || true)" 'd["count"]'; }

alive_is() {
  local out
  out="$(pc "$1" --json members 2>/dev/null)" || return 1
  [ "$(json "$out" 'sum(m["state"] == "alive" for m in d["members"])')" = "$2" ]
}
member_state_is() {
  local out
  out="$(pc "$1" --json members 2>/dev/null)" || return 1
  [ "$(json "$out" "[m['state'] for m in d['members'] if m['name'] == '$2']")" = "['$3']" ]
}
# applied_by PORT PURGE_ID NODE: the origin's status lists NODE as applied.
applied_by() {
  local out
  out="$(pc "$1" --json status "$2" 2>/dev/null)" || return 1
  [ "$(json "$out" "'$3' in [a['node'] for a in d['applied']]")" = True ]
}
ready() { curl -fsS -m 2 "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; }

# cache_status NODE PATH: the Cache-Status header of a GET of PATH (Host
# shop.example) through node NODE's edge; empty when there is no answer.
cache_status() {
  curl -sS -m 10 -o /dev/null -D - -H 'Host: shop.example' "http://127.0.0.1:$(edge_port "$1")$2" 2>/dev/null |
    tr -d '\r' | awk 'tolower($1) == "cache-status:" { sub(/^[^:]*:[ ]*/, ""); print }' || true
}
is_miss() { [[ "$1" == *fwd=miss* ]]; }
is_hit() { [[ "$1" == *hit* && "$1" != *fwd=* ]]; }
# edge_misses NODE PATH: the next GET of PATH through NODE's edge is a miss.
edge_misses() { is_miss "$(cache_status "$1" "$2")"; }
# Until a node has caught up after a start, its edge answers every request
# from the origin (forced misses).
edge_caught_up() {
  local m
  m="$(curl -fsS -m 2 "http://127.0.0.1:$(metrics_port "$1")/metrics" 2>/dev/null)" || return 1
  grep -qx 'purgecast_edge_caught_up 1' <<<"$m"
}

# wait_until DESCRIPTION SECONDS COMMAND...: polls every 0.25 s.
wait_until() {
  local desc="$1" limit="$2" start="$SECONDS" n=0
  shift 2
  while [ "$n" -lt $((limit * 4)) ] && [ $((SECONDS - start)) -lt "$limit" ]; do
    if "$@"; then return 0; fi
    sleep 0.25
    n=$((n + 1))
  done
  fail "not within ${limit}s: $desc"
}

all_ready() {
  local i
  for i in "${NODES[@]}"; do ready "$(metrics_port "$i")" || return 1; done
}
# wait_cluster_ready SECONDS API_PORT: every node ready, 5 alive at API_PORT.
wait_cluster_ready() {
  wait_until "all 5 nodes ready (/readyz)" "$1" all_ready
  wait_until "5 alive members at 127.0.0.1:$2" "$1" alive_is "$2" 5
}

# Container id of a compose service of this project.
cid() {
  local id
  id="$(docker ps -aq --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1")"
  [ "$(wc -w <<<"$id")" = 1 ] || fail "expected one container for $1, found: $id"
  echo "$id"
}

project_volumes() { docker volume ls -q --filter "label=com.docker.compose.project=$project"; }

# Removes every container, network and volume of the project, whatever
# state the test left them in.
teardown() {
  C down -v --remove-orphans -t 10 >/dev/null 2>&1 || true
  local id filter="label=com.docker.compose.project=$project"
  for id in $(docker ps -aq --filter "$filter"); do docker rm -f -v "$id" >/dev/null 2>&1 || true; done
  for id in $(docker network ls -q --filter "$filter"); do docker network rm "$id" >/dev/null 2>&1 || true; done
  for id in $(project_volumes); do docker volume rm -f "$id" >/dev/null 2>&1 || true; done
}
