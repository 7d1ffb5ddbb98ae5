#!/usr/bin/env bash
# Rehearsal: `eldercare-sim verify` against a real server, every injected
# emergency matched against the alerts it raised.
#
# Usage (from anywhere in the repository):
#   benches/verify/run.sh
#   HOMES=2000 DURATION_S=600 LOCAL_HOURS="15 2" BUILD=0 benches/verify/run.sh
#   HOMES=500 CARERS="1 0" DURATION_S=900 LOCAL_HOURS=15 benches/verify/run.sh
#
# One run per entry of LOCAL_HOURS, each on a fresh server: `eldercare
# serve` with the embedded SQLite store in a fresh data directory, the
# production durability (the default: intake log fsynced before each
# PUBACK), deploy/verify-rules.toml, every listener on a free port, an
# admin and a viewer token made with `eldercare token add`. The simulator
# registers its homes through RegistryService and runs
#
#   eldercare-sim verify --homes HOMES --gateway --duration-s DURATION_S \
#     --rules deploy/verify-rules.toml --inject-rate INJECT_RATE \
#     --local-hour H ...
#
# --gateway: one MQTT session a home (HOMES x 9 devices through it); one
# session a device would need more descriptors in the server than this
# machine's hard limit of 20,000 (docs/simulator.md, "Connections and this
# machine"). --local-hour H places the homes in the timezone where the run
# starts in local hour H (15: the elders' afternoon; 2: their night);
# "shanghai" runs them in Asia/Shanghai at the clock's own time of day.
# The default inject rate gives 300 episodes over 2,000 homes and 600 s,
# the 16 kinds in turn.
#
# CARERS=1 adds --carers: carers visit every home with no episode, one
# planned visit each (plans registered through RegistryService.Import;
# windows of 2 min from 3 min in; the times of deploy/verify-rules.toml's
# [visits]), and the result's `carers` object scores each visit's alerts
# against what its carer did (docs/simulator.md, "verify with carers").
# The run must leave every visit time to be judged: 900 s and more.
# CARERS="1 0" makes each hour's run twice, with carers and without (the
# same homes, seed and episodes), for a peer in the same sitting.
#
# Knobs (environment variables):
#   HOMES        homes                                         [2000]
#   DURATION_S   seconds of load                               [600]
#   LOCAL_HOURS  one run per entry: a local hour, or shanghai  ["15 2"]
#   INJECT_RATE  emergencies per home per day                  [21.6]
#   SEED         the homes, their lives and the episodes       [1]
#   CARERS       one run per entry: 1 with carers, 0 without   [0]
#   BUILD        1: cargo build --release first                [1]
#
# Output in OUT (default $CARGO_TARGET_DIR/verify-<time>): per run
# verify-<run>.json (the simulator's result), sim-<run>.log,
# server-<run>.log and the server's metrics at the end (metrics-<run>.txt),
# <run> being the hour, with `-carers` for a run with carers;
# and machine.txt (with the load average at each run's start and end).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HOMES=${HOMES:-2000}
DURATION_S=${DURATION_S:-600}
LOCAL_HOURS=${LOCAL_HOURS:-15 2}
INJECT_RATE=${INJECT_RATE:-21.6}
SEED=${SEED:-1}
CARERS=${CARERS:-0}
BUILD=${BUILD:-1}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
OUT=${OUT:-$TARGET/verify-$(date -u +%Y%m%dT%H%M%SZ)}
RULES=$REPO/deploy/verify-rules.toml

BENCH_TAG=verify
# shellcheck source=../common.sh
. "$REPO/benches/common.sh"

if [ "$BUILD" = 1 ]; then
  log "building release binaries (eldercare, eldercare-sim)"
  (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet -p eldercare -p eldercare-sim)
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ec-verify.XXXXXX")
# A private copy, so other builds in the shared target cannot change the
# binaries mid-run.
for b in eldercare eldercare-sim; do
  [ -x "$TARGET/release/$b" ] || die "$TARGET/release/$b missing (BUILD=1 builds it)"
  cp "$TARGET/release/$b" "$WORK/$b"
done
SERVER=$WORK/eldercare
SIM=$WORK/eldercare-sim
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "tree: $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- crates simulators 2>/dev/null || echo ' with local changes')"
  echo "binaries built: $(date -u -r "$TARGET/release/eldercare" '+%Y-%m-%d %H:%M UTC')"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memory: $(free -h | awk '/^Mem:/ { print $2 " total, " $7 " available" }')"
  echo "kernel: $(uname -r)"
  echo "open files (hard): $(ulimit -Hn)"
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"
log "output in $OUT"

for hour0 in $LOCAL_HOURS; do
for carers in $CARERS; do
  hour=$hour0
  carer_args=()
  if [ "$carers" = 1 ]; then
    hour=$hour0-carers
    carer_args=(--carers)
  fi
  data=$WORK/data-$hour
  mkdir -p "$data"
  tokens=$data/tokens.toml
  admin=$("$SERVER" token add --tokens-file "$tokens" --operator verify-admin --role admin)
  viewer=$("$SERVER" token add --tokens-file "$tokens" --operator verify-viewer --role viewer)
  conf=$WORK/server-$hour.toml
  {
    echo 'mqtt_addr = "127.0.0.1:0"'
    echo 'grpc_addr = "127.0.0.1:0"'
    echo 'metrics_addr = "127.0.0.1:0"'
    echo 'http_addr = "127.0.0.1:0"'
    echo "tokens_file = \"$tokens\""
    echo "rules_file = \"$RULES\""
    echo 'durability = "fsync"'
  } >"$conf"
  "$SERVER" serve --config "$conf" --data-dir "$data" \
    >"$OUT/server-$hour.out" 2>"$OUT/server-$hour.log" &
  server_pid=$!
  PIDS+=("$server_pid")
  wait_ready_line "$OUT/server-$hour.out" "$server_pid" ||
    die "the server did not become ready: $(tail -5 "$OUT/server-$hour.log")"
  ready=$(grep -m1 '^ready mqtt=' "$OUT/server-$hour.out")
  mqtt=$(sed -E 's/.*mqtt=([^ ]+).*/\1/' <<<"$ready")
  grpc=$(sed -E 's/.*grpc=([^ ]+).*/\1/' <<<"$ready")
  metrics_url="http://$(sed -E 's/.*metrics=([^ ]+).*/\1/' <<<"$ready")/metrics"
  hour_args=()
  [ "$hour0" = shanghai ] || hour_args=(--local-hour "$hour0")
  log "run $hour: server pid $server_pid (mqtt $mqtt, grpc $grpc); $HOMES homes for $DURATION_S s"
  echo "run $hour: start $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
  ELDERCARE_SIM_ADMIN_TOKEN=$admin ELDERCARE_SIM_TOKEN=$viewer \
    "$SIM" verify --homes "$HOMES" --gateway --duration-s "$DURATION_S" --seed "$SEED" \
    --rules "$RULES" --inject-rate "$INJECT_RATE" "${hour_args[@]}" "${carer_args[@]}" \
    --mqtt "$mqtt" --grpc-addr "http://$grpc" --no-progress \
    --result "$OUT/verify-$hour.json" >"$OUT/sim-$hour.txt" 2>"$OUT/sim-$hour.log" ||
    log "run $hour: the simulator failed: $(tail -3 "$OUT/sim-$hour.log")"
  echo "run $hour: end $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
  curl -sf "$metrics_url" >"$OUT/metrics-$hour.txt" || true
  stop_pid "$server_pid"
  cat "$OUT/sim-$hour.txt" >&2
done
done
log "done: $OUT"
