#!/usr/bin/env bash
# End-to-end load benchmark: the eldercare server (MQTT intake, rules,
# PostgreSQL storage, alerts over gRPC) under the simulator at rising
# rates, and, in the same run, the same load through Mosquitto to a plain
# counting subscriber as the peer for raw broker throughput.
#
# Usage (from anywhere in the repository):
#   benches/e2e/run.sh
#   RATES="1000 5000" DURATION_S=20 benches/e2e/run.sh
#
# Knobs (environment variables):
#   RATES          offered rates, messages/s, one run each   [1000 10000 50000]
#   DURATION_S     seconds of load per run                    [60]
#   HOMES          simulated homes (one MQTT connection per
#                  device: 5 a home in the legacy simulator,
#                  ~9 in the current one); the rate sets how
#                  often each device sends                    [1000]
#   SEED           simulator seed                             [1]
#   SOS_PER_S      injected SOS episodes per second, for the
#                  alert latency (contract mode only; the
#                  simulator injects at most one per home, from
#                  20 s in, so DURATION_S must exceed ~40)    [2]
#   PEER           1: also run Mosquitto + mqtt-sink; 0: skip [1]
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
# server for the whole run, with the test harness's settings (fsync,
# synchronous commit and full-page writes off).
#
# Output in $OUT: summary.md (the tables, also printed), results.csv (one
# row per rate), and per rate r<rate>/: samples-eldercare.csv,
# samples-mosquitto.csv (one row a second), sim-*.json (the simulator's
# result, contract mode), sink.json, metrics-{before,after}.txt, logs.
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
SINK_QOS=${SINK_QOS:-0}
SETTLE_S=${SETTLE_S:-30}
SIM_MODE=${SIM_MODE:-auto}
BUILD=${BUILD:-1}
SERVER_LOG=${SERVER_LOG:-}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
OUT=${OUT:-$TARGET/e2e-$(date -u +%Y%m%dT%H%M%SZ)}
# Devices a home in the legacy simulator.
DEVICES_PER_HOME=5

log() { printf '[e2e %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- processes we start, stopped on exit -----------------------------------
PIDS=()
WORK=""
PG_STOP=""
cleanup() {
  local rc=$?
  set +e
  local i pid
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[i]}
    kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  done
  [ -n "$PG_STOP" ] && eval "$PG_STOP" >/dev/null 2>&1
  [ -n "$WORK" ] && rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# Stops one process of ours: TERM (or the given signal), then KILL after
# a grace period.
stop_pid() {
  local pid=$1 sig=${2:-TERM} grace=${3:-30}
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; forget_pid "$pid"; return 0; }
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq $((grace * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still running ${grace}s after SIG$sig; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

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

pg_bin_dir() {
  local d
  if [ -n "${ELDERCARE_PG_BIN:-}" ]; then echo "$ELDERCARE_PG_BIN"; return; fi
  # A link on PATH (e.g. /usr/local/bin/initdb) leads to the real directory.
  if d=$(command -v initdb); then dirname "$(readlink -f "$d")"; return; fi
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$d" ] && echo "$d"
}
PG_BIN=$(pg_bin_dir) || true
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] && [ -x "$PG_BIN/createdb" ] ||
  die "PostgreSQL binaries (initdb, pg_ctl, createdb) not found: apt-get install postgresql, or set ELDERCARE_PG_BIN"

# One process cannot hold more sockets than this (simulator: one per device).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# Up to 10 devices a home (the current simulator has ~9).
need_fds=$((HOMES * 10 + 200))
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge "$need_fds" ] ||
  die "HOMES=$HOMES needs ~$need_fds file descriptors per process; the limit is $(ulimit -n)"

# --- build -------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
  log "building release binaries (eldercare, eldercare-sim, mqtt-sink)"
  (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet \
    -p eldercare -p eldercare-sim -p eldercare-benches --bins)
fi
SERVER=$TARGET/release/eldercare
SIM=$TARGET/release/eldercare-sim
SINK=$TARGET/release/mqtt-sink
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

free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 40000))
    if [ -z "$(ss -Htan "( sport = :$p )")" ]; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ec-e2e.XXXXXX")
chmod 755 "$WORK"
log "output in $OUT; simulator mode: $SIM_MODE"

# --- PostgreSQL --------------------------------------------------------------
PG_DIR=$WORK/pg
mkdir -p "$PG_DIR"
pg_as=()
if [ "$(id -u)" = 0 ]; then
  id -u postgres >/dev/null 2>&1 && command -v runuser >/dev/null ||
    die "running as root: initdb refuses root, and the postgres user or runuser is missing"
  chown postgres:postgres "$PG_DIR"
  pg_as=(runuser -u postgres --)
fi
LC_ALL=C "${pg_as[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres -E UTF8 \
  --locale=C --no-sync >"$OUT/pg-initdb.log" 2>&1 || die "initdb failed: see $OUT/pg-initdb.log"
PG_PORT=""
for _ in 1 2 3 4 5; do
  PG_PORT=$(free_port)
  # The store tests' settings: durability traded for speed.
  if LC_ALL=C "${pg_as[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null 2>&1; then
    break
  fi
  PG_PORT=""
done
[ -n "$PG_PORT" ] || die "PostgreSQL did not start: $(tail -5 "$PG_DIR/server.log")"
PG_STOP="${pg_as[*]} $PG_BIN/pg_ctl -D $PG_DIR/data -m immediate -w stop"
PG_PID=$(head -1 "$PG_DIR/data/postmaster.pid")
PG_VERSION=$("$PG_BIN/postgres" --version | awk '{ print $3 }')
log "PostgreSQL $PG_VERSION on 127.0.0.1:$PG_PORT (pid $PG_PID)"

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
tokens_file = "$TOKENS"
EOF

# --- sampling ------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)

# CPU ticks (utime + stime) of a pid, 0 when gone.
ticks() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  s=${s##*) }
  # Fields after the command: state is 3rd of the line, utime 14th, stime 15th.
  awk '{ print $12 + $13 }' <<<"$s"
}
pg_ticks() {
  local t=0 p
  for p in $PG_PID $(pgrep -P "$PG_PID" 2>/dev/null); do t=$((t + $(ticks "$p"))); done
  echo "$t"
}
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
machine_ticks() { awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8; print busy, busy + $5 + $6 }' /proc/stat; }

# One number from Prometheus text: the sum of a metric over its labels.
metric() {
  awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%d\n", s }' "$1"
}

# sampler PID METRICS_URL CSV SIMPID_FILE: one row a second until stopped.
sampler() {
  local pid=$1 url=$2 csv=$3 simfile=$4
  local hdr="t_s,cpu_pct,rss_kib,hwm_kib,sim_cpu_pct,pg_cpu_pct,machine_busy_pct,accepted,written,dropped,duplicates,refused,sim_running,connections"
  echo "$hdr" >"$csv"
  local t0=$EPOCHREALTIME prev_t=$EPOCHREALTIME
  local prev=$(ticks "$pid") prev_pg=$(pg_ticks) sim_pid="" prev_sim=0
  local m prev_busy prev_all busy all
  read -r prev_busy prev_all < <(machine_ticks)
  local mtmp=$WORK/sample.$$.$BASHPID
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    local now=$EPOCHREALTIME
    [ -z "$sim_pid" ] && [ -s "$simfile" ] && { sim_pid=$(cat "$simfile"); prev_sim=$(ticks "$sim_pid"); }
    local cur cur_pg cur_sim=0 running=0
    cur=$(ticks "$pid")
    cur_pg=$(pg_ticks)
    if [ -n "$sim_pid" ] && kill -0 "$sim_pid" 2>/dev/null; then
      running=1
      cur_sim=$(ticks "$sim_pid")
    fi
    read -r busy all < <(machine_ticks)
    local acc="" wr="" dr="" dup="" ref="" conn=""
    if [ -n "$url" ] && curl -sf --max-time 2 "$url" -o "$mtmp"; then
      acc=$(metric "$mtmp" eldercare_ingest_accepted_total)
      wr=$(metric "$mtmp" eldercare_telemetry_written_total)
      dr=$(metric "$mtmp" eldercare_telemetry_dropped_total)
      dup=$(metric "$mtmp" eldercare_ingest_duplicates_total)
      ref=$(metric "$mtmp" eldercare_ingest_refused_total)
      conn=$(metric "$mtmp" eldercare_mqtt_connections_total)
    fi
    awk -v t0="$t0" -v pt="$prev_t" -v t="$now" -v hz="$CLK_TCK" \
      -v c="$cur" -v pc="$prev" -v g="$cur_pg" -v pg="$prev_pg" \
      -v s="$cur_sim" -v ps="$prev_sim" -v b="$busy" -v pb="$prev_busy" -v a="$all" -v pa="$prev_all" \
      -v rss="$(status_kib "$pid" VmRSS)" -v hwm="$(status_kib "$pid" VmHWM)" \
      -v rest="$acc,$wr,$dr,$dup,$ref,$running,$conn" 'BEGIN {
        dt = t - pt; if (dt <= 0) dt = 1
        sim = (s >= ps) ? (s - ps) : 0
        printf "%.2f,%.1f,%s,%s,%.1f,%.1f,%.1f,%s\n", t - t0, 100 * (c - pc) / hz / dt, rss, hwm,
          100 * sim / hz / dt, 100 * ((g > pg) ? g - pg : 0) / hz / dt, (a > pa) ? 100 * (b - pb) / (a - pa) : 0, rest
      }' >>"$csv"
    prev=$cur prev_pg=$cur_pg prev_sim=$cur_sim prev_busy=$busy prev_all=$all prev_t=$now
  done
  rm -f "$mtmp"
}

# load_rate: lines "t_s count running" (running 1 while the simulator
# ran) -> "rate after": the rate while the load lasted, and how many
# arrived after the simulator stopped (what was queued, somewhere, behind
# the load). The load starts midway between the last sample at the
# starting count and the next; it ends at the last sample while the
# simulator ran, or earlier, midway to the first sample at the final
# count, when the count stopped growing before the simulator ended (it
# may linger: verify waits for late alerts).
load_rate() {
  awk '{ n++; t[n] = $1; c[n] = $2; r[n] = $3 }
    END {
      if (n < 2) { print "- -"; exit }
      a = 1; while (a < n && c[a + 1] == c[1]) a++
      b = 0; for (i = 1; i <= n; i++) if (r[i] == 1) b = i
      if (b <= a) { print "- -"; exit }
      end = t[b]
      if (c[b] == c[n]) { f = b; while (f > a + 1 && c[f - 1] == c[n]) f--; end = (t[f - 1] + t[f]) / 2 }
      w = end - (t[a] + t[a + 1]) / 2
      printf "%.0f %d\n", (w > 0) ? (c[b] - c[1]) / w : 0, c[n] - c[b]
    }'
}

# Averages over the load window (the rows where the simulator ran).
# summarize CSV -> "cpu_avg cpu_max hwm_mib sim_cpu pg_cpu busy intake after backlog_end backlog_max slope dropped"
summarize() {
  local rate_after
  rate_after=$(awk -F, 'NR > 1 && $8 != "" { print $1, $8, $13 }' "$1" | load_rate)
  # Rows without the server's metrics (it had stopped) are left out.
  awk -F, -v ra="$rate_after" 'FNR == NR { if (FNR > 1 && $8 != "") m = 1; next }
    FNR == 1 || (m && $8 == "") { next }
    { n++; t[n] = $1; cpu[n] = $2; hwm[n] = $4; sim[n] = $5; pg[n] = $6; busy[n] = $7
      acc[n] = $8; wr[n] = $9; dr[n] = $10; run[n] = $13 }
    END {
      first = 0; last = 0
      for (i = 1; i <= n; i++) if (run[i] == 1) { if (!first) first = i; last = i }
      if (!first) { first = 1; last = n }
      for (i = first; i <= last; i++) { c += cpu[i]; if (cpu[i] > cmax) cmax = cpu[i]; sc += sim[i]; pc += pg[i]; bc += busy[i] }
      k = last - first + 1
      for (i = 1; i <= n; i++) if (hwm[i] > h) h = hwm[i]
      bend = "-"; bmax = "-"; slope = "-"; drop = "-"
      if (m) {
        # Backlog: accepted readings not yet written nor dropped; its
        # least-squares slope over the middle of the load window.
        bmax = 0
        for (i = first; i <= last; i++) { bl = acc[i] - wr[i] - dr[i]; if (bl > bmax) bmax = bl }
        bend = acc[last] - wr[last] - dr[last]
        lo = first + int(k / 5); hi = last - int(k / 10)
        sx = sy = sxx = sxy = q = 0
        for (i = lo; i <= hi; i++) { x = t[i]; y = acc[i] - wr[i] - dr[i]; q++; sx += x; sy += y; sxx += x * x; sxy += x * y }
        slope = (q > 2 && q * sxx - sx * sx > 0) ? sprintf("%.0f", (q * sxy - sx * sy) / (q * sxx - sx * sx)) : "-"
        drop = dr[n]
      }
      printf "%.0f %.0f %.0f %.0f %.0f %.0f %s %s %s %s %s\n", c / k, cmax, h / 1024, sc / k, pc / k, bc / k,
        ra, bend, bmax, slope, drop
    }' "$1" "$1"
}

wait_ready_line() {
  local file=$1 pid=$2
  for _ in $(seq 600); do
    grep -q '^ready mqtt=' "$file" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# --- the runs ----------------------------------------------------------------
RESULTS=$OUT/results.csv
echo "rate,mode,homes,devices,duration_s,sent,eldercare_accepted,eldercare_intake_per_s,eldercare_after_load,mosquitto_delivered,mosquitto_rate_per_s,mosquitto_after_load,ratio,server_cpu_avg_pct,server_cpu_max_pct,server_peak_rss_mib,sim_cpu_avg_pct,pg_cpu_avg_pct,machine_busy_pct,backlog_end,backlog_max,backlog_slope_per_s,telemetry_dropped,duplicates,refused,alert_count,alert_p50_ms,alert_p95_ms,alert_p99_ms,alert_max_ms,mosquitto_cpu_avg_pct,mosquitto_peak_rss_mib,emergencies_injected,emergencies_detected,note" >"$RESULTS"

for rate in $RATES; do
  dir=$OUT/r$rate
  mkdir -p "$dir"
  log "rate $rate/s: eldercare"

  # Fresh database, data dir and server.
  db=bench_r$rate
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"
  url="postgres://postgres@127.0.0.1:$PG_PORT/$db"
  data=$WORK/data-$rate
  mkdir -p "$data"
  [ "$SIM_MODE" = legacy ] && legacy_register "$url" "$data" "$dir"
  env ${SERVER_LOG:+ELDERCARE_LOG="$SERVER_LOG"} "$SERVER" serve --config "$CONFIG" --database-url "$url" --data-dir "$data" \
    >"$dir/server.out" 2>"$dir/server.log" &
  server_pid=$!
  PIDS+=("$server_pid")
  wait_ready_line "$dir/server.out" "$server_pid" ||
    die "the server did not become ready: $(tail -5 "$dir/server.log")"
  ready=$(grep -m1 '^ready mqtt=' "$dir/server.out")
  mqtt=$(sed -E 's/.*mqtt=([^ ]+).*/\1/' <<<"$ready")
  grpc=$(sed -E 's/.*grpc=([^ ]+).*/\1/' <<<"$ready")
  metrics_url="http://$(sed -E 's/.*metrics=([^ ]+).*/\1/' <<<"$ready")/metrics"
  log "server pid $server_pid: mqtt $mqtt, grpc $grpc, $metrics_url"
  curl -sf "$metrics_url" >"$dir/metrics-before.txt"

  simfile=$dir/.sim.pid
  rm -f "$simfile"
  sampler "$server_pid" "$metrics_url" "$dir/samples-eldercare.csv" "$simfile" &
  sampler_pid=$!
  PIDS+=("$sampler_pid")
  sim_eldercare "$rate" "$mqtt" "$grpc" "$dir/sim-eldercare.json" "$dir"
  echo "$SIM_PID" >"$simfile"
  sim_wait "$dir/sim-eldercare.log"
  note=$SIM_NOTE
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
  read -r cpu_avg cpu_max hwm sim_cpu pg_cpu busy intake after bend bmax slope dropped \
    < <(summarize "$dir/samples-eldercare.csv")
  accepted=$(($(metric "$dir/metrics-after.txt" eldercare_ingest_accepted_total) - $(metric "$dir/metrics-before.txt" eldercare_ingest_accepted_total)))
  dups=$(metric "$dir/metrics-after.txt" eldercare_ingest_duplicates_total)
  refused=$(metric "$dir/metrics-after.txt" eldercare_ingest_refused_total)
  written=$(metric "$dir/metrics-after.txt" eldercare_telemetry_written_total)
  log "eldercare: accepted $accepted ($intake/s during the load, $after after it), written $written, dropped $dropped, server CPU ${cpu_avg}% peak RSS ${hwm} MiB"

  sent="-" devices=$((HOMES * DEVICES_PER_HOME)) lat=("-" "-" "-" "-" "-") inj="-" det="-"
  if [ -s "$dir/sim-eldercare.json" ]; then
    j=$dir/sim-eldercare.json
    sent=$(jq -r '.messages.sent // "-"' "$j")
    devices=$(jq -r '.devices // "-"' "$j")
    read -r -a lat < <(jq -r '.publish_to_alert_ms // {} | [.count, .p50, .p95, .p99, .max] | map(if . == null then "-" else tostring end) | join(" ")' "$j")
    inj=$(jq -r '.emergencies.injected // "-"' "$j")
    det=$(jq -r '.emergencies.detected // "-"' "$j")
  fi

  m_delivered="-" m_rate="-" m_after="-" ratio="-" m_cpu="-" m_hwm="-"
  if [ "$PEER" = 1 ]; then
    log "rate $rate/s: Mosquitto -> mqtt-sink"
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
    mosq_pid=$!
    PIDS+=("$mosq_pid")
    for _ in $(seq 100); do
      [ -n "$(ss -Htln "( sport = :$mport )")" ] && break
      kill -0 "$mosq_pid" 2>/dev/null || die "mosquitto did not start: $(cat "$dir/mosquitto.out")"
      sleep 0.1
    done
    rm -f "$dir/.sink.ready"
    "$SINK" --addr "127.0.0.1:$mport" --filter 'eldercare/v1/#' --qos "$SINK_QOS" --idle-s 3 \
      --out "$dir/sink.json" --ready-file "$dir/.sink.ready" --series "$dir/sink-series.csv" 2>"$dir/sink.log" &
    sink_pid=$!
    PIDS+=("$sink_pid")
    for _ in $(seq 100); do [ -f "$dir/.sink.ready" ] && break; sleep 0.1; done
    [ -f "$dir/.sink.ready" ] || die "mqtt-sink did not subscribe: $(cat "$dir/sink.log")"
    simfile=$dir/.sim-peer.pid
    rm -f "$simfile"
    sampler "$mosq_pid" "" "$dir/samples-mosquitto.csv" "$simfile" &
    sampler_pid=$!
    PIDS+=("$sampler_pid")
    sim_peer "$rate" "127.0.0.1:$mport" "$dir/sim-mosquitto.json" "$dir"
    echo "$SIM_PID" >"$simfile"
    sim_wait "$dir/sim-mosquitto.log"
    sim_stop_ms=$(date +%s%3N)
    [ -z "$SIM_NOTE" ] || note="${note:+$note; }peer: $SIM_NOTE"
    # The sink ends by itself 3 s after the last message.
    for _ in $(seq 300); do kill -0 "$sink_pid" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$sink_pid" TERM 5
    stop_pid "$mosq_pid" TERM 10
    stop_pid "$sampler_pid" TERM 5
    read -r m_cpu _ m_hwm _ _ _ _ _ _ _ _ _ < <(summarize "$dir/samples-mosquitto.csv")
    m_delivered=$(jq -r .received "$dir/sink.json")
    read -r m_rate m_after < <(awk -F, -v stop="$sim_stop_ms" '{ printf "%.3f %d %d\n", $1 / 1000, $2, ($1 <= stop) ? 1 : 0 }' \
      "$dir/sink-series.csv" | load_rate)
    if [ "$intake" != "-" ] && [ "$m_rate" != "-" ] && [ "$m_rate" -gt 0 ]; then
      ratio=$(awk -v a="$intake" -v b="$m_rate" 'BEGIN { printf "%.2f", a / b }')
    fi
    log "mosquitto: delivered $m_delivered ($m_rate/s during the load, $m_after after it), CPU ${m_cpu}% peak RSS ${m_hwm} MiB"
  fi

  echo "$rate,$SIM_MODE,$HOMES,$devices,$DURATION_S,$sent,$accepted,$intake,$after,$m_delivered,$m_rate,$m_after,$ratio,$cpu_avg,$cpu_max,$hwm,$sim_cpu,$pg_cpu,$busy,$bend,$bmax,$slope,$dropped,$dups,$refused,${lat[0]},${lat[1]},${lat[2]},${lat[3]},${lat[4]},$m_cpu,$m_hwm,$inj,$det,${note//,/;}" >>"$RESULTS"
  # Each run's database goes, to keep the disk use to one run's.
  "$PG_BIN/dropdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db" || true
done

# --- report --------------------------------------------------------------------
{
  echo "## eldercare end to end, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $(nproc) CPUs, $(lscpu 2>/dev/null | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r); PostgreSQL $PG_VERSION; $(mosquitto_version=$("$MOSQUITTO" -h 2>/dev/null | awk '/version/ { print $3; exit }'); echo "Mosquitto ${mosquitto_version:-?}")."
  echo "Load: $HOMES homes, $(tail -1 "$RESULTS" | cut -d, -f4) devices (one MQTT connection each), $DURATION_S s per rate, simulator mode $SIM_MODE, sink QoS $SINK_QOS."
  echo
  echo "| offered msg/s | server intake msg/s | Mosquitto->sink msg/s | ratio | server CPU % (avg/max) | server peak RSS MiB | alert latency ms p50/p95/p99/max (n) | accepted after the load (server / Mosquitto) | writer backlog end / slope per s | readings dropped |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  tail -n +2 "$RESULTS" | while IFS=, read -r rate _ _ _ _ sent acc intake after md mr mafter ratio ca cm hwm sc pc busy bend bmax slope dropped dups ref an p50 p95 p99 pmax mc mh inj det note; do
    echo "| $rate | $intake | $mr | $ratio | $ca / $cm | $hwm | $p50 / $p95 / $p99 / $pmax ($an) | $after / $mafter | $bend / $slope | $dropped |"
  done
  echo
  echo "| offered msg/s | sent | accepted | duplicates | refused | simulator CPU % | PostgreSQL CPU % | machine busy % | Mosquitto delivered | Mosquitto CPU % | Mosquitto peak RSS MiB | SOS injected/detected |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  tail -n +2 "$RESULTS" | while IFS=, read -r rate _ _ _ _ sent acc intake after md mr mafter ratio ca cm hwm sc pc busy bend bmax slope dropped dups ref an p50 p95 p99 pmax mc mh inj det note; do
    echo "| $rate | $sent | $acc | $dups | $ref | $sc | $pc | $busy | $md | $mc | $mh | $inj / $det |"
  done
  tail -n +2 "$RESULTS" | while IFS=, read -r rate rest; do
    note=${rest##*,}
    [ -z "$note" ] || printf '\nNot to be trusted, %s msg/s: %s\n' "$rate" "$note"
  done
} >"$OUT/summary.md"
cat "$OUT/summary.md"
log "raw data in $OUT"
