#!/usr/bin/env bash
# Start (or stop) a local Ray cluster on loopback for `rlbench run --executor ray` and the
# Ray tests: a head node and one more worker node, each its own raylet with its own CPUs, as
# two machines of a real cluster would be. Prints the cluster's address.
#
#   eval "$(scripts/ray_cluster.sh start --export)"   # sets RAY_ADDRESS
#   rlbench run suites/cartpole.toml --executor ray   # uses $RAY_ADDRESS
#   scripts/ray_cluster.sh stop                        # this cluster only (by its RLBENCH_RAY_DIR)
#
# Settings (environment): RLBENCH_RAY_PORT (the head's port, default 6389),
# RLBENCH_RAY_CPUS (CPUs of each node, default 1), RLBENCH_RAY_DIR (Ray's session folder,
# default /tmp/rlbench-ray). Needs Ray: pip install -c constraints.txt -e ".[ray]".
set -euo pipefail

PORT="${RLBENCH_RAY_PORT:-6389}"
CPUS="${RLBENCH_RAY_CPUS:-1}"
DIR="${RLBENCH_RAY_DIR:-/tmp/rlbench-ray}"
ADDRESS="127.0.0.1:$PORT"
export RAY_USAGE_STATS_ENABLED=0
# A loopback test cluster without Ray's token authentication, even where an earlier
# `ray.init()` left a token in ~/.ray/auth_token (which would turn it on for the head and
# lock out the worker node).
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"

log() { echo "ray_cluster.sh: $*" >&2; }

if ! command -v ray >/dev/null 2>&1; then
    log "Ray is not installed (pip install -c constraints.txt -e \".[ray]\")"
    exit 1
fi

case "${1:-start}" in
start)
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        log "a cluster is already up at $ADDRESS"
    else
        mkdir -p "$DIR"
        : >"$DIR/sessions"
        # Each node starts in a session of its own, whose id is kept, so that `stop` finds
        # every process the node left (Ray's agents and client server name no folder).
        in_session() { setsid bash -c 'echo $$ >>"$0/sessions"; exec "$@"' "$DIR" "$@"; }
        log "starting the head node on $ADDRESS ($CPUS CPU)"
        in_session ray start --head --node-ip-address 127.0.0.1 --port "$PORT" --num-cpus "$CPUS" \
            --num-gpus 0 --include-dashboard false --temp-dir "$DIR" --disable-usage-stats \
            >"$DIR/head.log" 2>&1 || { cat "$DIR/head.log" >&2; exit 1; }
        # Another loopback address, as another machine has its own: a driver on this machine
        # connects to the node of 127.0.0.1 (the head) without ambiguity.
        log "starting a worker node on 127.0.0.2 ($CPUS CPU)"
        in_session ray start --address "$ADDRESS" --node-ip-address 127.0.0.2 --num-cpus "$CPUS" \
            --num-gpus 0 --disable-usage-stats >"$DIR/worker.log" 2>&1 \
            || { cat "$DIR/worker.log" >&2; exit 1; }
    fi
    if [[ "${2:-}" == "--export" ]]; then
        echo "export RAY_ADDRESS=$ADDRESS"
    else
        echo "$ADDRESS"
    fi
    ;;
stop)
    # Only this cluster's processes: every node of it (and every worker) runs under its
    # session folder in $DIR, so other Ray clusters of the machine are left alone (`ray stop`
    # would stop them all).
    pattern="$DIR/session_|--temp-dir[= ]$DIR( |$)"
    members() {  # the cluster's live processes (a zombie is gone already: not counted)
        local pids
        pids=$(
            pgrep -f -- "$pattern" || true
            if [[ -f "$DIR/sessions" ]]; then
                for sid in $(cat "$DIR/sessions"); do pgrep -s "$sid" || true; done
            fi
        )
        [[ -z "$pids" ]] || ps -o pid=,stat= -p "$(echo $pids | tr ' ' ',')" | awk '$2 !~ /^Z/ {print $1}'
    }
    pids=$(members | sort -u)
    if [[ -n "$pids" ]]; then
        log "stopping the cluster of $DIR ($(echo "$pids" | wc -w) processes)"
        kill -TERM $pids 2>/dev/null || true
        for _ in $(seq 20); do
            [[ -n "$(members)" ]] || break
            sleep 0.5
        done
        # What is left, and whatever a node started meanwhile, is killed; and waited for,
        # so that no process of the cluster is still exiting when `stop` returns.
        for _ in $(seq 20); do
            pids=$(members | sort -u)
            [[ -n "$pids" ]] || break
            kill -KILL $pids 2>/dev/null || true
            sleep 0.5
        done
    fi
    ;;
*)
    log "usage: scripts/ray_cluster.sh start [--export] | stop"
    exit 2
    ;;
esac
