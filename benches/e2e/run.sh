#!/usr/bin/env bash
# End-to-end load benchmark: the eldercare server (MQTT intake, rules,
# PostgreSQL storage, alerts over gRPC) under the simulator at rising
# rates, and, in the same run, the same load through Mosquitto to a plain
# counting subscriber as the peer for raw broker throughput.
#
# Usage (from anywhere in the repository):
#   benches/e2e/run.sh
#   RATES="1000 5000" DURATION_S=20 benches/e2e/run.sh
#   DURABILITY="fsync none" RATES=20000 HOMES=300 benches/e2e/run.sh
#
# Knobs (environment variables):
#   RATES          offered rates, messages/s, one run each   [1000 10000 50000]
#   DURATION_S     seconds of load per run                    [60]
#   HOMES          simulated homes (one MQTT connection per
#                  device: 5 a home in the legacy simulator,
#                  9 in the current one); the rate sets how
#                  often each device sends, at most 40 msg/s
#                  a device (the server slows a session above
#                  50): 20,000 msg/s needs ~155 homes by day,
#                  the simulator says how many if too few     [1000]
#   DURABILITY     the server's `durability`, one run each
#                  per rate: "fsync" (production), "none",
#                  or "fsync none" for both in turn           [fsync]
#   SEED           simulator seed                             [1]
#   SOS_PER_S      injected SOS episodes per second, for the
#                  alert latency (contract mode only; the
#                  simulator injects at most one per home, from
#                  20 s in, so DURATION_S must exceed ~40)    [2]
#   PEER           1: also run Mosquitto + mqtt-sink; 0: skip [1]
#   PROBE          1: run sos-probe beside the simulator in
#                  each eldercare run (not the peer): SOS
#                  latency from a mostly idle client of its
#                  own, not inflated by the simulator's CPU;
#                  0: skip                 [1 in contract mode, else 0]
#   PROBE_COUNT    SOS the probe sends, one per probe elder
#                  (it registers PROBE_COUNT + 50 elders)     [100]
#   PROBE_INTERVAL_MS  milliseconds between two probe SOS     [500]
#   PROBE_DELAY_S  seconds from the probe's start (beside the
#                  simulator's) to its first SOS; it sends
#                  until DURATION_S - 5 s from its start, so
#                  DURATION_S must exceed PROBE_DELAY_S + 5;
#                  raise it when the simulator takes long to
#                  connect its devices                        [20]
#   SINK_QOS       QoS of the sink's subscription, 0 or 1     [0]
#   SETTLE_S       after the load, wait up to this long for
#                  the writer's backlog to drain              [30]
#   SIM_MODE       auto | contract | legacy (see below)       [auto]
#   OUT            output directory               [target/e2e-<UTC date>]
#   BUILD          1: cargo build --release first; 0: use the
#                  binaries already in the target dir         [1]
#   CARGO_TARGET_DIR  where the release binaries are          [<repo>/target]
#   ELDERCARE_PG_BIN  directory of initdb/pg_ctl  [newest /usr/lib/postgresql/*/bin]
#   SERVER_LOG     the server's log filter (ELDERCARE_LOG)    [its default]
#
# Per rate it starts a fresh server on a fresh database (so the peak RSS
# and the duplicate filter belong to that run alone), runs the simulator
# for DURATION_S, samples the server every second (CPU from
# /proc/<pid>/stat, VmRSS/VmHWM from /proc/<pid>/status, the ingest and
# writer counters from /metrics), stops it; then does the same with a
# fresh Mosquitto, mqtt-sink subscribed to eldercare/v1/#, and the same
# simulator load without registration. PostgreSQL is one throwaway
# server for the whole run, at its default durability (fsync,
# synchronous commit and full-page writes on), as in production. With
# several DURABILITY settings each rate runs the server once per
# setting, back to back (the order swapped from rate to rate), so their
# ratio is taken under the same load on the machine.
#
# Output in $OUT: summary.md (the tables, also printed), results.csv (one
# row per rate and durability), and per run r<rate>-<durability>/:
# samples-eldercare.csv (one row a second), sim-eldercare.json (the
# simulator's result, contract mode: offered rate against the target and
# why it fell short), metrics-{before,load-end,after}.txt (the intake
# log's fsync time and group size among them), logs; r<rate>-mosquitto/
# the same for the peer; probe.json, probe.log: sos-probe's result and
# log (PROBE=1).
#
# Needs: cargo, PostgreSQL server binaries (initdb, pg_ctl, createdb),
# mosquitto (Debian: `apt-get install -y mosquitto`; installed when
# missing if we are root), curl, jq, ss. As root, PostgreSQL runs as the
# `postgres` user through runuser (initdb refuses root).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RATES=${RATES:-"1000 10000 50000"}
DURATION_S=${DURATION_S:-60}
HOMES=${HOMES:-1000}
SEED=${SEED:-1}
SOS_PER_S=${SOS_PER_S:-2}
PEER=${PEER:-1}
PROBE=${PROBE:-auto}
PROBE_COUNT=${PROBE_COUNT:-100}
PROBE_INTERVAL_MS=${PROBE_INTERVAL_MS:-500}
PROBE_DELAY_S=${PROBE_DELAY_S:-20}
SINK_QOS=${SINK_QOS:-0}
SETTLE_S=${SETTLE_S:-30}
DURABILITY=${DURABILITY:-fsync}
SIM_MODE=${SIM_MODE:-auto}
BUILD=${BUILD:-1}
SERVER_LOG=${SERVER_LOG:-}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
OUT=${OUT:-$TARGET/e2e-$(date -u +%Y%m%dT%H%M%SZ)}
# Devices a home in the legacy simulator.
DEVICES_PER_HOME=5

BENCH_TAG=e2e
# shellcheck source=../common.sh
. "$REPO/benches/common.sh"

# --- prerequisites -----------------------------------------------------------
for tool in curl jq ss awk; do
  command -v "$tool" >/dev/null || die "$tool is needed (Debian: apt-get install -y $tool)"
done
if [ "$PEER" = 1 ] && ! command -v mosquitto >/dev/null && ! [ -x /usr/sbin/mosquitto ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "mosquitto missing: installing Debian's package"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto
  else
    die "mosquitto is needed for the peer run: apt-get install -y mosquitto (or PEER=0)"
  fi
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

pg_find

# One process cannot hold more sockets than this (simulator: one per device).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# Up to 10 devices a home (the current simulator has ~9).
need_fds=$((HOMES * 10 + 200))
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge "$need_fds" ] ||
  die "HOMES=$HOMES needs ~$need_fds file descriptors per process; the limit is $(ulimit -n)"

# --- build -------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
  log "building release binaries (eldercare, eldercare-sim, mqtt-sink, sos-probe)"
  (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet \
    -p eldercare -p eldercare-sim -p eldercare-benches --bins)
fi
SERVER=$TARGET/release/eldercare
SIM=$TARGET/release/eldercare-sim
SINK=$TARGET/release/mqtt-sink
PROBE_BIN=$TARGET/release/sos-probe
for b in "$SERVER" "$SIM" "$SINK"; do [ -x "$b" ] || die "$b missing (BUILD=1 builds it)"; done

# --- simulator: the CLI contract, in one place ---------------------------------
# contract: `eldercare-sim verify|run ... --duration-s --rate --result`,
#   homes registered through the API, alert latency in the result JSON.
# legacy: the simulator before that rewrite: `run --interval-s` until
#   SIGINT, homes registered with `eldercare-sim registry` + `eldercare
#   import`, no result file (no alert latency, no sent count).
if [ "$SIM_MODE" = auto ]; then
  if "$SIM" run --help 2>&1 | grep -q -- '--duration-s'; then SIM_MODE=contract; else SIM_MODE=legacy; fi
fi
case $SIM_MODE in contract | legacy) ;; *) die "SIM_MODE must be auto, contract or legacy" ;; esac
if [ "$PROBE" = auto ]; then
  if [ "$SIM_MODE" = contract ]; then PROBE=1; else PROBE=0; fi
fi
case $PROBE in 0 | 1) ;; *) die "PROBE must be 0 or 1" ;; esac
if [ "$PROBE" = 1 ]; then
  [ -x "$PROBE_BIN" ] || die "$PROBE_BIN missing (BUILD=1 builds it, or PROBE=0)"
  [ "$DURATION_S" -gt $((PROBE_DELAY_S + 5)) ] ||
    die "the probe sends from PROBE_DELAY_S=$PROBE_DELAY_S s to DURATION_S - 5 s: DURATION_S must exceed $((PROBE_DELAY_S + 5)) (or PROBE=0)"
fi

# SOS episodes per home per day giving about SOS_PER_S a second.
INJECT_RATE=$(awk -v s="$SOS_PER_S" -v h="$HOMES" 'BEGIN { printf "%.3f", s * 86400 / h }')

# sim_eldercare RATE MQTT GRPC RESULT: the load on eldercare, in the
# background; sets SIM_PID. Tokens go by environment, not argv.
sim_eldercare() {
  local rate=$1 mqtt=$2 grpc=$3 result=$4 dir=$5
  if [ "$SIM_MODE" = contract ]; then
    ELDERCARE_SIM_ADMIN_TOKEN=$ADMIN_TOKEN ELDERCARE_SIM_TOKEN=$VIEWER_TOKEN \
      "$SIM" verify --homes "$HOMES" --seed "$SEED" \
      --mqtt-addr "$mqtt" --grpc-addr "http://$grpc" \
      --duration-s "$DURATION_S" --rate "$rate" \
      --inject-rate "$INJECT_RATE" --inject-kinds sos \
      --result "$result" --no-progress >"$dir/sim-eldercare.log" 2>&1 &
  else
    "$SIM" run --homes "$HOMES" --seed "$SEED" --mqtt-addr "$mqtt" \
      --interval-s "$(legacy_interval "$rate")" >"$dir/sim-eldercare.log" 2>&1 &
  fi
  SIM_PID=$!
  PIDS+=("$SIM_PID")
}

# sim_peer RATE MQTT RESULT DIR: the same load on the peer broker.
sim_peer() {
  local rate=$1 mqtt=$2 result=$3 dir=$4
  if [ "$SIM_MODE" = contract ]; then
    "$SIM" run --no-register --homes "$HOMES" --seed "$SEED" --mqtt-addr "$mqtt" \
      --duration-s "$DURATION_S" --rate "$rate" \
      --inject-rate "$INJECT_RATE" --inject-kinds sos \
      --result "$result" --no-progress >"$dir/sim-mosquitto.log" 2>&1 &
  else
    "$SIM" run --homes "$HOMES" --seed "$SEED" --mqtt-addr "$mqtt" \
      --interval-s "$(legacy_interval "$rate")" >"$dir/sim-mosquitto.log" 2>&1 &
  fi
  SIM_PID=$!
  PIDS+=("$SIM_PID")
}

# probe_start MQTT GRPC DIR: sos-probe beside the simulator, in the
# background; sets PROBE_PID. Its elders are its own (PROBE-...); it sends
# while the simulator's load lasts (the simulator's load starts after its
# registration and connections, the probe's window ends 5 s before
# DURATION_S from its start). Tokens go by environment, not argv.
probe_start() {
  local mqtt=$1 grpc=$2 dir=$3
  ELDERCARE_PROBE_ADMIN_TOKEN=$ADMIN_TOKEN ELDERCARE_PROBE_TOKEN=$VIEWER_TOKEN \
    "$PROBE_BIN" --mqtt-addr "$mqtt" --grpc-addr "http://$grpc" \
    --elders $((PROBE_COUNT + 50)) --count "$PROBE_COUNT" --interval-ms "$PROBE_INTERVAL_MS" \
    --delay-s "$PROBE_DELAY_S" --duration-s $((DURATION_S - PROBE_DELAY_S - 5)) \
    --result "$dir/probe.json" >"$dir/probe.log" 2>&1 &
  PROBE_PID=$!
  PIDS+=("$PROBE_PID")
}

# probe_wait DIR: waits for the probe (it ends by itself, up to 10 s after
# its last SOS), stopping it after 60 s more (it then reports what it
# has). Sets PROBE_NOTE when it failed, else "".
probe_wait() {
  local dir=$1 rc=0
  PROBE_NOTE=""
  for _ in $(seq 600); do kill -0 "$PROBE_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$PROBE_PID" 2>/dev/null; then
    log "warning: sos-probe still running; stopping it"
    stop_pid "$PROBE_PID" INT 15
  else
    wait "$PROBE_PID" || rc=$?
    forget_pid "$PROBE_PID"
  fi
  if [ "$rc" != 0 ] || [ ! -s "$dir/probe.json" ]; then
    PROBE_NOTE="sos-probe exit $rc: $(grep -m1 -i 'error' "$dir/probe.log" | cut -c1-120)"
    log "warning: $PROBE_NOTE"
  fi
}

# Legacy: every device sends once per interval.
legacy_interval() {
  awk -v h="$HOMES" -v d="$DEVICES_PER_HOME" -v r="$1" 'BEGIN { printf "%.6f", h * d / r }'
}

# Legacy: register the homes in a database before its server starts.
legacy_register() {
  local url=$1 data=$2 dir=$3
  if [ ! -f "$WORK/registry/devices.csv" ]; then
    "$SIM" registry --homes "$HOMES" --seed "$SEED" --out "$WORK/registry" >/dev/null
  fi
  "$SERVER" import --database-url "$url" --data-dir "$data" \
    "$WORK/registry/elders.csv" "$WORK/registry/devices.csv" >"$dir/import.log" 2>&1 ||
    die "import failed: $(tail -5 "$dir/import.log")"
}

# Waits for the simulator: contract mode stops by itself after
# DURATION_S; legacy mode is stopped with SIGINT. Sets SIM_NOTE to why a
# run is not to be trusted (the simulator failed or ended early), else "".
sim_wait() {
  local log=$1 start=$SECONDS rc=0
  SIM_NOTE=""
  if [ "$SIM_MODE" = contract ]; then
    local deadline=$((SECONDS + DURATION_S + 180))
    while kill -0 "$SIM_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
    if kill -0 "$SIM_PID" 2>/dev/null; then
      SIM_NOTE="simulator still running $((DURATION_S + 180)) s after start; stopped"
      stop_pid "$SIM_PID" INT 30
      return
    fi
    wait "$SIM_PID" || rc=$?
  else
    while kill -0 "$SIM_PID" 2>/dev/null && [ $((SECONDS - start)) -lt "$DURATION_S" ]; do sleep 0.5; done
    if ! kill -0 "$SIM_PID" 2>/dev/null; then
      wait "$SIM_PID" || rc=$?
      SIM_NOTE="simulator ended after $((SECONDS - start)) s of $DURATION_S"
    else
      kill -INT "$SIM_PID"
      for _ in $(seq 300); do kill -0 "$SIM_PID" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$SIM_PID" 2>/dev/null && kill -KILL "$SIM_PID"
      wait "$SIM_PID" || rc=$?
    fi
  fi
  forget_pid "$SIM_PID"
  if [ "$rc" != 0 ]; then
    SIM_NOTE="${SIM_NOTE:+$SIM_NOTE; }simulator exit $rc: $(grep -m1 -i 'error' "$log" | cut -c1-120)"
  fi
  [ -z "$SIM_NOTE" ] || log "warning: $SIM_NOTE"
}
# --- end of the simulator contract ---------------------------------------------

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ec-e2e.XXXXXX")
chmod 755 "$WORK"
log "output in $OUT; simulator mode: $SIM_MODE"

# --- PostgreSQL --------------------------------------------------------------
pg_start

# --- tokens and config ---------------------------------------------------------
TOKENS=$WORK/tokens.toml
ADMIN_TOKEN=$("$SERVER" token add --tokens-file "$TOKENS" --operator bench-admin --role admin 2>/dev/null)
VIEWER_TOKEN=$("$SERVER" token add --tokens-file "$TOKENS" --operator bench-viewer --role viewer 2>/dev/null)
CONFIG=$WORK/eldercare.toml
# Port 0 everywhere: the server prints the addresses it bound on its
# "ready" line.
cat >"$CONFIG" <<EOF
mqtt_addr = "127.0.0.1:0"
grpc_addr = "127.0.0.1:0"
metrics_addr = "127.0.0.1:0"
http_addr = "127.0.0.1:0"
tokens_file = "$TOKENS"
EOF

# --- the runs ----------------------------------------------------------------
RESULTS=$OUT/results.csv
echo "rate,durability,mode,homes,devices,duration_s,sent,eldercare_accepted,eldercare_intake_per_s,eldercare_after_load,mosquitto_delivered,mosquitto_rate_per_s,mosquitto_after_load,ratio,server_cpu_avg_pct,server_cpu_max_pct,server_peak_rss_mib,sim_cpu_avg_pct,pg_cpu_avg_pct,machine_busy_pct,backlog_end,backlog_max,backlog_slope_per_s,telemetry_dropped,duplicates,refused,alert_count,alert_p50_ms,alert_p95_ms,alert_p99_ms,alert_max_ms,mosquitto_cpu_avg_pct,mosquitto_peak_rss_mib,emergencies_injected,emergencies_detected,sim_offered_per_s,sim_planned_per_s,sim_puback_p99_ms,sim_short_reason,fsync_p50_ms,fsync_p99_ms,fsync_max_ms,fsync_mean_ms,fsyncs_per_s,group_p50,group_p99,group_max,group_mean,peer_offered_per_s,peer_short_reason,probe_sent,probe_raised,probe_p50_ms,probe_p99_ms,probe_max_ms,probe_puback_p50_ms,probe_puback_p99_ms,note" >"$RESULTS"

# One quantile of a Prometheus summary, or with QUANTILE "" the metric's
# plain value (its _sum, _count); "-" when absent.
quantile() {
  awk -v m="$2" -v q="$3" '
    q != "" && index($1, m "{") == 1 && index($1, "quantile=\"" q "\"") { v = $NF; found = 1 }
    q == "" && $1 == m { v = $NF; found = 1 }
    END { if (found) print v; else print "-" }' "$1"
}

# intake_figures BEFORE LOAD_END AFTER SECONDS -> the intake log's fsync
# time in ms (p50 p99 max over the summary's window as the load ended,
# mean over the run), fsyncs a second, and messages per group (p50 p99
# max mean); "-" for what the server does not export.
intake_figures() {
  local before=$1 at_end=$2 after=$3 secs=$4 f=eldercare_intake_fsync_seconds g=eldercare_intake_group_size
  awk -v p50="$(quantile "$at_end" $f 0.5)" -v p99="$(quantile "$at_end" $f 0.99)" \
    -v pmax="$(quantile "$at_end" $f 1)" \
    -v gp50="$(quantile "$at_end" $g 0.5)" -v gp99="$(quantile "$at_end" $g 0.99)" \
    -v gmax="$(quantile "$at_end" $g 1)" \
    -v n0="$(quantile "$before" ${f}_count "")" -v s0="$(quantile "$before" ${f}_sum "")" \
    -v n1="$(quantile "$after" ${f}_count "")" -v s1="$(quantile "$after" ${f}_sum "")" \
    -v g0="$(quantile "$before" ${g}_sum "")" -v g1="$(quantile "$after" ${g}_sum "")" -v secs="$secs" 'BEGIN {
      a = (p50 == "-") ? "-" : sprintf("%.2f", p50 * 1000)
      b = (p99 == "-") ? "-" : sprintf("%.2f", p99 * 1000)
      c = (pmax == "-") ? "-" : sprintf("%.2f", pmax * 1000)
      if (n0 == "-") { n0 = 0; s0 = 0; g0 = 0 }
      n = (n1 == "-") ? 0 : n1 - n0
      mean = (n > 0) ? sprintf("%.2f", (s1 - s0) * 1000 / n) : "-"
      rate = (n > 0 && secs > 0) ? sprintf("%.0f", n / secs) : "-"
      gmean = (n > 0 && g1 != "-") ? sprintf("%.1f", (g1 - g0) / n) : "-"
      gp50 = (gp50 == "-") ? "-" : sprintf("%.0f", gp50)
      gp99 = (gp99 == "-") ? "-" : sprintf("%.0f", gp99)
      gmax = (gmax == "-") ? "-" : sprintf("%.0f", gmax)
      print a, b, c, mean, rate, gp50, gp99, gmax, gmean
    }'
}

# The simulator's own account of its rate (contract mode): offered,
# planned, PUBACK wait p99 (ms), and why it fell short ("-" if it did
# not; spaces and commas as "_").
sim_rate() {
  local j=$1
  if [ -s "$j" ]; then
    jq -r '.rate // {} | [(.offered_per_s // "-" | if type == "number" then (. + 0.5 | floor) else . end),
      (.planned_per_s // "-" | if type == "number" then (. + 0.5 | floor) else . end),
      (.puback_ms.p99 // "-"), ((.reasons // []) | if length == 0 then "-" else join("; ") end)]
      | map(tostring | gsub("[ ,]"; "_")) | join(" ")' "$j"
  else
    echo "- - - -"
  fi
}

# run_eldercare RATE DURABILITY DIR: one run on a fresh server and
# database; sets RUN_ROW, RUN_INTAKE, RUN_REST, RUN_SIM, RUN_NOTE.
run_eldercare() {
  local rate=$1 dur=$2 dir=$3
  mkdir -p "$dir"
  log "rate $rate/s: eldercare, durability $dur"

  # Fresh database, data dir and server.
  local db=bench_r${rate}_$dur
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"
  local url="postgres://postgres@127.0.0.1:$PG_PORT/$db"
  local data=$WORK/data-$rate-$dur
  mkdir -p "$data"
  [ "$SIM_MODE" = legacy ] && legacy_register "$url" "$data" "$dir"
  env ${SERVER_LOG:+ELDERCARE_LOG="$SERVER_LOG"} "$SERVER" serve --config "$CONFIG" --database-url "$url" --data-dir "$data" \
    --durability "$dur" >"$dir/server.out" 2>"$dir/server.log" &
  local server_pid=$!
  PIDS+=("$server_pid")
  wait_ready_line "$dir/server.out" "$server_pid" ||
    die "the server did not become ready: $(tail -5 "$dir/server.log")"
  local ready mqtt grpc metrics_url
  ready=$(grep -m1 '^ready mqtt=' "$dir/server.out")
  mqtt=$(sed -E 's/.*mqtt=([^ ]+).*/\1/' <<<"$ready")
  grpc=$(sed -E 's/.*grpc=([^ ]+).*/\1/' <<<"$ready")
  metrics_url="http://$(sed -E 's/.*metrics=([^ ]+).*/\1/' <<<"$ready")/metrics"
  log "server pid $server_pid: mqtt $mqtt, grpc $grpc, $metrics_url"
  curl -sf "$metrics_url" >"$dir/metrics-before.txt"

  local simfile=$dir/.sim.pid
  rm -f "$simfile"
  sampler "$server_pid" "$metrics_url" "$dir/samples-eldercare.csv" "$simfile" &
  local sampler_pid=$!
  PIDS+=("$sampler_pid")
  sim_eldercare "$rate" "$mqtt" "$grpc" "$dir/sim-eldercare.json" "$dir"
  echo "$SIM_PID" >"$simfile"
  [ "$PROBE" = 1 ] && probe_start "$mqtt" "$grpc" "$dir"
  sim_wait "$dir/sim-eldercare.log"
  # The summaries' quantiles cover about the last minute: taken as the
  # load ends, they are the load's.
  curl -sf "$metrics_url" -o "$dir/metrics-load-end.txt" || true
  local note=$SIM_NOTE acc wr dr
  if [ "$PROBE" = 1 ]; then
    probe_wait "$dir"
    [ -z "$PROBE_NOTE" ] || note="${note:+$note; }$PROBE_NOTE"
  fi
  # Let the writer drain, sampling on.
  for _ in $(seq "$SETTLE_S"); do
    curl -sf "$metrics_url" -o "$dir/metrics-after.txt" || break
    acc=$(metric "$dir/metrics-after.txt" eldercare_ingest_accepted_total)
    wr=$(metric "$dir/metrics-after.txt" eldercare_telemetry_written_total)
    dr=$(metric "$dir/metrics-after.txt" eldercare_telemetry_dropped_total)
    [ $((acc - wr - dr)) -le 0 ] && break
    sleep 1
  done
  sleep 1
  curl -sf "$metrics_url" >"$dir/metrics-after.txt" || true
  stop_pid "$server_pid" TERM 60
  stop_pid "$sampler_pid" TERM 5
  local cpu_avg cpu_max hwm sim_cpu pg_cpu busy intake after bend bmax slope dropped
  read -r cpu_avg cpu_max hwm sim_cpu pg_cpu busy intake after bend bmax slope dropped \
    < <(summarize "$dir/samples-eldercare.csv")
  local accepted dups refused written
  accepted=$(($(metric "$dir/metrics-after.txt" eldercare_ingest_accepted_total) - $(metric "$dir/metrics-before.txt" eldercare_ingest_accepted_total)))
  dups=$(metric "$dir/metrics-after.txt" eldercare_ingest_duplicates_total)
  refused=$(metric "$dir/metrics-after.txt" eldercare_ingest_refused_total)
  written=$(metric "$dir/metrics-after.txt" eldercare_telemetry_written_total)
  log "eldercare ($dur): accepted $accepted ($intake/s during the load, $after after it), written $written, dropped $dropped, server CPU ${cpu_avg}% peak RSS ${hwm} MiB"

  local sent="-" devices=$((HOMES * DEVICES_PER_HOME)) lat=("-" "-" "-" "-" "-") inj="-" det="-" j
  if [ -s "$dir/sim-eldercare.json" ]; then
    j=$dir/sim-eldercare.json
    sent=$(jq -r '.messages.sent // "-"' "$j")
    devices=$(jq -r '.devices // "-"' "$j")
    read -r -a lat < <(jq -r '.publish_to_alert_ms // {} | [.count, .p50, .p95, .p99, .max] | map(if . == null then "-" else tostring end) | join(" ")' "$j")
    inj=$(jq -r '.emergencies.injected // "-"' "$j")
    det=$(jq -r '.emergencies.detected // "-"' "$j")
  fi
  local offered planned puback why figs
  read -r offered planned puback why < <(sim_rate "$dir/sim-eldercare.json")
  [ "$why" = "-" ] || log "eldercare ($dur): the simulator offered $offered of $rate msg/s: ${why//_/ }"
  figs=$(intake_figures "$dir/metrics-before.txt" "$dir/metrics-load-end.txt" "$dir/metrics-after.txt" "$DURATION_S")
  log "intake log ($dur): fsync ms p50 p99 max mean, fsyncs/s, group p50 p99 max mean: $figs"
  RUN_INTAKE=$intake
  RUN_ROW="$rate,$dur,$SIM_MODE,$HOMES,$devices,$DURATION_S,$sent,$accepted,$intake,$after"
  RUN_REST="$cpu_avg,$cpu_max,$hwm,$sim_cpu,$pg_cpu,$busy,$bend,$bmax,$slope,$dropped,$dups,$refused,${lat[0]},${lat[1]},${lat[2]},${lat[3]},${lat[4]}"
  RUN_SIM="$inj,$det,$offered,$planned,$puback,$why,${figs// /,}"
  RUN_PROBE="-,-,-,-,-,-,-"
  if [ -s "$dir/probe.json" ]; then
    RUN_PROBE=$(jq -r '[.sent, .raised, .latency_ms.p50, .latency_ms.p99, .latency_ms.max,
      .puback_ms.p50, .puback_ms.p99] | map(if . == null then "-" else tostring end) | join(",")' "$dir/probe.json")
    log "sos-probe ($dur): sent, raised, SOS ms p50 p99 max, PUBACK ms p50 p99: ${RUN_PROBE//,/ }"
  fi
  RUN_NOTE=$note
  # Each run's database goes, to keep the disk use to one run's.
  "$PG_BIN/dropdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db" || true
}

# run_peer RATE DIR: the same load through Mosquitto to mqtt-sink; sets
# PEER_RATE, PEER_COLS, PEER_RES, PEER_SIM, PEER_NOTE.
run_peer() {
  local rate=$1 dir=$2
  mkdir -p "$dir"
  log "rate $rate/s: Mosquitto -> mqtt-sink"
  local mport mconf
  mport=$(free_port)
  mconf=$WORK/mosquitto-$rate.conf
  cat >"$mconf" <<EOF
listener $mport 127.0.0.1
allow_anonymous true
persistence false
# No broker-side drops on the subscriber's queue.
max_queued_messages 10000000
max_inflight_messages 1000
log_dest file $dir/mosquitto.log
log_type error
log_type warning
EOF
  # As root Mosquitto would switch to its own user and lose the log file.
  [ "$(id -u)" = 0 ] && echo "user root" >>"$mconf"
  "$MOSQUITTO" -c "$mconf" >"$dir/mosquitto.out" 2>&1 &
  local mosq_pid=$!
  PIDS+=("$mosq_pid")
  for _ in $(seq 100); do
    [ -n "$(ss -Htln "( sport = :$mport )")" ] && break
    kill -0 "$mosq_pid" 2>/dev/null || die "mosquitto did not start: $(cat "$dir/mosquitto.out")"
    sleep 0.1
  done
  rm -f "$dir/.sink.ready"
  "$SINK" --addr "127.0.0.1:$mport" --filter 'eldercare/v1/#' --qos "$SINK_QOS" --idle-s 3 \
    --out "$dir/sink.json" --ready-file "$dir/.sink.ready" --series "$dir/sink-series.csv" 2>"$dir/sink.log" &
  local sink_pid=$!
  PIDS+=("$sink_pid")
  for _ in $(seq 100); do [ -f "$dir/.sink.ready" ] && break; sleep 0.1; done
  [ -f "$dir/.sink.ready" ] || die "mqtt-sink did not subscribe: $(cat "$dir/sink.log")"
  local simfile=$dir/.sim-peer.pid
  rm -f "$simfile"
  sampler "$mosq_pid" "" "$dir/samples-mosquitto.csv" "$simfile" &
  local sampler_pid=$!
  PIDS+=("$sampler_pid")
  sim_peer "$rate" "127.0.0.1:$mport" "$dir/sim-mosquitto.json" "$dir"
  echo "$SIM_PID" >"$simfile"
  sim_wait "$dir/sim-mosquitto.log"
  local sim_stop_ms
  sim_stop_ms=$(date +%s%3N)
  PEER_NOTE=$SIM_NOTE
  # The sink ends by itself 3 s after the last message.
  for _ in $(seq 300); do kill -0 "$sink_pid" 2>/dev/null || break; sleep 0.1; done
  stop_pid "$sink_pid" TERM 5
  stop_pid "$mosq_pid" TERM 10
  stop_pid "$sampler_pid" TERM 5
  local m_cpu m_hwm m_delivered m_rate m_after offered planned puback why
  read -r m_cpu _ m_hwm _ _ _ _ _ _ _ _ _ < <(summarize "$dir/samples-mosquitto.csv")
  m_delivered=$(jq -r .received "$dir/sink.json")
  read -r m_rate m_after < <(awk -F, -v stop="$sim_stop_ms" '{ printf "%.3f %d %d\n", $1 / 1000, $2, ($1 <= stop) ? 1 : 0 }' \
    "$dir/sink-series.csv" | load_rate)
  log "mosquitto: delivered $m_delivered ($m_rate/s during the load, $m_after after it), CPU ${m_cpu}% peak RSS ${m_hwm} MiB"
  read -r offered planned puback why < <(sim_rate "$dir/sim-mosquitto.json")
  [ "$why" = "-" ] || log "mosquitto: the simulator offered $offered of $rate msg/s: ${why//_/ }"
  PEER_RATE=$m_rate
  PEER_COLS="$m_delivered,$m_rate,$m_after"
  PEER_RES="$m_cpu,$m_hwm"
  PEER_SIM="$offered,$why"
}

# Each rate runs every durability setting in turn, then the peer; the
# order of the settings swaps from one rate to the next, so a pair shares
# the machine's load and neither always goes first.
read -r -a DURS <<<"$DURABILITY"
i=0
for rate in $RATES; do
  order=("${DURS[@]}")
  if [ $((i % 2)) = 1 ]; then
    order=()
    for ((k = ${#DURS[@]} - 1; k >= 0; k--)); do order+=("${DURS[k]}"); done
  fi
  i=$((i + 1))
  rows=()
  for dur in "${order[@]}"; do
    run_eldercare "$rate" "$dur" "$OUT/r$rate-$dur"
    rows+=("$RUN_ROW|$RUN_INTAKE|$RUN_REST|$RUN_SIM|$RUN_PROBE|$RUN_NOTE")
  done
  PEER_COLS="-,-,-" PEER_RES="-,-" PEER_SIM="-,-" PEER_RATE="-" PEER_NOTE=""
  [ "$PEER" = 1 ] && run_peer "$rate" "$OUT/r$rate-mosquitto"
  for r in "${rows[@]}"; do
    IFS='|' read -r row intake rest simcols probecols note <<<"$r"
    ratio="-"
    if [ "$intake" != "-" ] && [ "$PEER_RATE" != "-" ] && [ "$PEER_RATE" -gt 0 ]; then
      ratio=$(awk -v a="$intake" -v b="$PEER_RATE" 'BEGIN { printf "%.2f", a / b }')
    fi
    [ -z "$PEER_NOTE" ] || note="${note:+$note; }peer: $PEER_NOTE"
    IFS=, read -r inj det simrest <<<"$simcols"
    echo "$row,$PEER_COLS,$ratio,$rest,$PEER_RES,$inj,$det,$simrest,$PEER_SIM,$probecols,${note//,/;}" >>"$RESULTS"
  done
done

# --- report --------------------------------------------------------------------
# Columns of results.csv, for the tables below.
COLS="rate dur mode homes devices dursec sent acc intake after md mr mafter ratio ca cm hwm sc pc busy bend bmax slope dropped dups ref an p50 p95 p99 pmax mc mh inj det off plan pub why f50 f99 fmax fmean fps g50 g99 gmax gmean poff pwhy prs prr prp50 prp99 prmax prpb50 prpb99 note"
{
  echo "## eldercare end to end, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $(nproc) CPUs, $(lscpu 2>/dev/null | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r); PostgreSQL $PG_VERSION (default durability: fsync, synchronous_commit on); $(mosquitto_version=$("$MOSQUITTO" -h 2>/dev/null | awk '/version/ { print $3; exit }'); echo "Mosquitto ${mosquitto_version:-?}")."
  echo "Load: $HOMES homes, $(tail -1 "$RESULTS" | cut -d, -f5) devices (one MQTT connection each), $DURATION_S s per run, simulator mode $SIM_MODE, sink QoS $SINK_QOS; server durability: $DURABILITY."
  echo
  echo "| offered msg/s | durability | simulator offered msg/s (to eldercare / Mosquitto) | server intake msg/s | Mosquitto->sink msg/s | ratio to Mosquitto | server CPU % (avg/max) | server peak RSS MiB | alert latency ms p50/p95/p99/max (n) | probe SOS ms p50/p99 (n) | accepted after the load (server / Mosquitto) | writer backlog end / slope per s | readings dropped |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  tail -n +2 "$RESULTS" | while IFS=, read -r $COLS; do
    echo "| $rate | $dur | $off / $poff | $intake | $mr | $ratio | $ca / $cm | $hwm | $p50 / $p95 / $p99 / $pmax ($an) | $prp50 / $prp99 ($prr of $prs) | $after / $mafter | $bend / $slope | $dropped |"
  done
  if [ "$PROBE" = 1 ]; then
    echo
    echo "Alert latency is the simulator's own figure: publish to the alert's arrival, both timed inside the simulator, so inflated when its CPU is saturated. Probe SOS is sos-probe's: a mostly idle client beside it with elders of its own, timing from just before its publish to the RAISED event's arrival, one SOS every $PROBE_INTERVAL_MS ms from $PROBE_DELAY_S s after its start (n: raised of sent; its PUBACK wait p50 / p99 in results.csv)."
  fi
  echo
  echo "Intake log: time to write and fsync one group (ms; p50/p99/max over about the last minute of the load, mean over the run), fsyncs a second, messages a group; the simulator's wait for a PUBACK, p99."
  echo
  echo "| offered msg/s | durability | fsync ms p50 / p99 / max | fsync ms mean | fsyncs/s | group size p50 / p99 / max | group size mean | PUBACK wait p99 ms |"
  echo "|---|---|---|---|---|---|---|---|"
  tail -n +2 "$RESULTS" | while IFS=, read -r $COLS; do
    echo "| $rate | $dur | $f50 / $f99 / $fmax | $fmean | $fps | $g50 / $g99 / $gmax | $gmean | $pub |"
  done
  if [ "${#DURS[@]}" -gt 1 ]; then
    echo
    echo "Intake with ${DURS[0]} over intake with each other setting, same rate:"
    echo
    awk -F, -v d0="${DURS[0]}" 'NR > 1 { if ($2 == d0) a[$1] = $9; else { b[$1, $2] = $9; o[++n] = $1 SUBSEP $2 } }
      END { for (i = 1; i <= n; i++) { split(o[i], k, SUBSEP)
        if ((k[1] in a) && a[k[1]] != "-" && b[o[i]] != "-" && b[o[i]] > 0)
          printf "- %s msg/s: %s %s / %s %s = %.2f\n", k[1], d0, a[k[1]], k[2], b[o[i]], a[k[1]] / b[o[i]] } }' "$RESULTS"
  fi
  echo
  echo "| offered msg/s | durability | sent | accepted | duplicates | refused | simulator CPU % | PostgreSQL CPU % | machine busy % | Mosquitto delivered | Mosquitto CPU % | Mosquitto peak RSS MiB | SOS injected/detected |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  tail -n +2 "$RESULTS" | while IFS=, read -r $COLS; do
    echo "| $rate | $dur | $sent | $acc | $dups | $ref | $sc | $pc | $busy | $md | $mc | $mh | $inj / $det |"
  done
  tail -n +2 "$RESULTS" | while IFS=, read -r $COLS; do
    [ "$why" = "-" ] || printf '\nThe simulator fell short at %s msg/s (%s): it offered eldercare %s msg/s: %s\n' "$rate" "$dur" "$off" "${why//_/ }"
    [ "$pwhy" = "-" ] || printf '\nThe simulator fell short at %s msg/s: it offered Mosquitto %s msg/s: %s\n' "$rate" "$poff" "${pwhy//_/ }"
    [ -z "$note" ] || printf '\nNot to be trusted, %s msg/s (%s): %s\n' "$rate" "$dur" "$note"
  done
} >"$OUT/summary.md"
cat "$OUT/summary.md"
log "raw data in $OUT"
