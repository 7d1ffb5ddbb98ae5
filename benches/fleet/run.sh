#!/usr/bin/env bash
# Fleet benchmark: many device sessions on one server process, their
# connection rate against Mosquitto's, and the cost of MQTT over TLS.
#
# Usage (from anywhere in the repository):
#   benches/fleet/run.sh
#   FLEET_HOMES=1000 FLEET_DURATION_S=60 TLS=0 benches/fleet/run.sh
#
# Three parts, in one run, on one throwaway PostgreSQL server at its
# default durability and the server's default durability (intake log
# fsynced before each PUBACK):
#
#  1. fleet: FLEET_HOMES homes of nine devices, one MQTT session a device
#     (2,112 homes = 19,008 sessions), registered by `eldercare import`,
#     connect to one `eldercare serve` and live their ordinary day (no
#     --rate) for FLEET_DURATION_S after all are connected; the simulator
#     runs as FLEET_PROCS processes connecting from FLEET_SOURCE_ADDRS.
#     Sampled every second: the server's CPU (utime + stime from
#     /proc/PID/stat), VmRSS and VmHWM, its open descriptors (one a device
#     session: the live sessions are the descriptors over those it held
#     before the fleet came), established connections on its MQTT port
#     (ss), and /metrics (eldercare_mqtt_connections_total,
#     eldercare_ingest_accepted_total, ...; the server exports no gauge
#     of live sessions). The ramp lasts until the live sessions first
#     reach 99.5 % of their highest count; the steady window runs from
#     5 s after that to 3 s before the last second they are all there
#     (the simulator's own stop closes them): steady RSS (and its growth
#     over the server's RSS before the fleet, per session), CPU and
#     intake are taken over it; the teardown lasts from then until fewer
#     than 1 % are left. The simulator reports CONNACKs/s while the fleet
#     connects and the time from its first attempt to the last CONNACK.
#  2. peer (PEER=1): the same simulator command with --no-register
#     against Debian's mosquitto (no persistence, max_connections -1, its
#     open-file limit raised to the hard limit), same duration: its
#     CONNACKs/s, and eldercare's over it.
#  3. TLS (TLS=1): a CA and a server certificate for 127.0.0.1 made with
#     openssl; TLS_HOMES homes imported into a fresh database; for each
#     of plain and TLS a fresh server (the same configuration, both
#     listeners open, the certificate loaded) on that data, and the
#     simulator at TLS_RATE msg/s (above what it can offer here: its
#     ceiling) for TLS_DURATION_S, to the plain port, or to the TLS port
#     with --tls-ca. Intake (readings accepted over the time they were
#     arriving, as in benches/e2e/run.sh), the server's CPU over the load,
#     and CPU per 1,000 msg/s of intake. TLS_REPS pairs, the order
#     swapped from pair to pair.
#
# Knobs (environment variables):
#   FLEET_HOMES        homes in part 1 (9 sessions each)          [2112]
#   FLEET_PROCS        simulator processes                        [4]
#   FLEET_SOURCE_ADDRS local addresses the sessions connect from  [127.0.0.2-127.0.0.9]
#   FLEET_DURATION_S   seconds of load once connected             [90]
#   FLEET_MQTT5        1: the devices speak MQTT 5                [0]
#   FLEET_CONCURRENCY  sessions connecting at once per process    [128]
#   PEER               1: part 2; 0: skip                          [1]
#   TLS                1: part 3; 0: skip                          [1]
#   TLS_HOMES          homes in part 3                             [400]
#   TLS_RATE           offered msg/s in part 3                     [50000]
#   TLS_DURATION_S     seconds of load per part-3 run              [60]
#   TLS_REPS           plain/TLS pairs                             [1]
#   TLS_PROCS          simulator processes in part 3               [1]
#   SEED               simulator seed                              [1]
#   SERVER_ENV         extra environment for the server, e.g.
#                      "MALLOC_ARENA_MAX=2"                        []
#   OUT                output directory         [target/fleet-<UTC date>]
#   BUILD              1: cargo build --release first              [1]
#   CARGO_TARGET_DIR   where the release binaries are              [<repo>/target]
#   ELDERCARE_PG_BIN   directory of initdb/pg_ctl  [newest /usr/lib/postgresql/*/bin]
#
# The binaries are copied to a scratch directory before the first run,
# so a build in the same target directory cannot change them mid-run.
#
# Output in $OUT: summary.md (also printed), and per run a directory:
# samples-*.csv (one row a second; see benches/common.sh), established.csv
# (part 1), sim.json (the simulator's result), sim.log, server.log/out,
# metrics-{before,after}.txt, mosquitto.log.
#
# Needs: cargo, PostgreSQL server binaries, mosquitto (Debian package),
# openssl, curl, jq, ss; an open-file hard limit above the sessions in
# part 1 (the server holds one descriptor a device session; each
# simulator process three a session through its source-address relay).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FLEET_HOMES=${FLEET_HOMES:-2112}
FLEET_PROCS=${FLEET_PROCS:-4}
FLEET_SOURCE_ADDRS=${FLEET_SOURCE_ADDRS:-127.0.0.2-127.0.0.9}
FLEET_DURATION_S=${FLEET_DURATION_S:-90}
FLEET_MQTT5=${FLEET_MQTT5:-0}
FLEET_CONCURRENCY=${FLEET_CONCURRENCY:-128}
PEER=${PEER:-1}
TLS=${TLS:-1}
TLS_HOMES=${TLS_HOMES:-400}
TLS_RATE=${TLS_RATE:-50000}
TLS_DURATION_S=${TLS_DURATION_S:-60}
TLS_REPS=${TLS_REPS:-1}
TLS_PROCS=${TLS_PROCS:-1}
SEED=${SEED:-1}
SERVER_ENV=${SERVER_ENV:-}
BUILD=${BUILD:-1}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
OUT=${OUT:-$TARGET/fleet-$(date -u +%Y%m%dT%H%M%SZ)}

BENCH_TAG=fleet
# shellcheck source=../common.sh
. "$REPO/benches/common.sh"

# --- prerequisites -----------------------------------------------------------
for tool in curl jq ss awk openssl; do
  command -v "$tool" >/dev/null || die "$tool is needed (Debian: apt-get install -y $tool)"
done
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ "$PEER" = 0 ] || [ -x "$MOSQUITTO" ] || die "mosquitto is needed for the peer run: apt-get install -y mosquitto (or PEER=0)"
pg_find

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FLEET_SESSIONS=$((FLEET_HOMES * 9))
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((FLEET_SESSIONS + 256)) ]; then
  log "warning: $FLEET_SESSIONS sessions need ~$((FLEET_SESSIONS + 256)) descriptors in the server; the limit is $NOFILE: expect refusals"
fi

# --- build, and a private copy of the binaries ---------------------------------
if [ "$BUILD" = 1 ]; then
  log "building release binaries (eldercare, eldercare-sim)"
  (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet -p eldercare -p eldercare-sim)
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ec-fleet.XXXXXX")
chmod 755 "$WORK"
for b in eldercare eldercare-sim; do
  [ -x "$TARGET/release/$b" ] || die "$TARGET/release/$b missing (BUILD=1 builds it)"
  cp "$TARGET/release/$b" "$WORK/$b"
done
SERVER=$WORK/eldercare
SIM=$WORK/eldercare-sim
BUILT="built $(date -u -r "$TARGET/release/eldercare" '+%Y-%m-%d %H:%M UTC') (tree at the start of this run: $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- crates simulators 2>/dev/null || echo ' with local changes'))${SERVER_ENV:+; server environment $SERVER_ENV}"
log "output in $OUT; binaries: $BUILT"

pg_start

TOKENS=$WORK/tokens.toml
"$SERVER" token add --tokens-file "$TOKENS" --operator bench-admin --role admin >/dev/null 2>&1

# config FILE [TLS]: every listener on port 0 (the ready line names them);
# with TLS, the certificate, both MQTT listeners open, gRPC over TLS.
config() {
  {
    echo 'mqtt_addr = "127.0.0.1:0"'
    echo 'grpc_addr = "127.0.0.1:0"'
    echo 'metrics_addr = "127.0.0.1:0"'
    echo 'http_addr = "127.0.0.1:0"'
    echo "tokens_file = \"$TOKENS\""
    if [ "${2:-}" = tls ]; then
      echo 'mqtts_addr = "127.0.0.1:0"'
      echo '[tls]'
      echo "cert = \"$WORK/tls/server.pem\""
      echo "key = \"$WORK/tls/server.key\""
    fi
  } >"$1"
}

# import_homes HOMES DB DATA DIR: a fresh database and data dir with the
# simulator's homes, registered with `eldercare import` (the simulator
# registers over plain gRPC only; with a certificate the server serves
# gRPC over TLS).
import_homes() {
  local homes=$1 db=$2 data=$3 dir=$4
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"
  mkdir -p "$data" "$WORK/registry-$homes"
  "$SIM" registry --homes "$homes" --seed "$SEED" --out "$WORK/registry-$homes" >/dev/null
  "$SERVER" import --database-url "postgres://postgres@127.0.0.1:$PG_PORT/$db" --data-dir "$data" \
    "$WORK/registry-$homes/elders.csv" "$WORK/registry-$homes/devices.csv" >"$dir/import.log" 2>&1 ||
    die "import failed: $(tail -5 "$dir/import.log")"
}

# server_start DB DATA CONFIG DIR: sets SERVER_PID, MQTT, MQTTS, METRICS_URL.
server_start() {
  local db=$1 data=$2 conf=$3 dir=$4
  # shellcheck disable=SC2086 # SERVER_ENV is a list of NAME=VALUE words
  env $SERVER_ENV "$SERVER" serve --config "$conf" --database-url "postgres://postgres@127.0.0.1:$PG_PORT/$db" \
    --data-dir "$data" >"$dir/server.out" 2>"$dir/server.log" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_ready_line "$dir/server.out" "$SERVER_PID" ||
    die "the server did not become ready: $(tail -5 "$dir/server.log")"
  local ready
  ready=$(grep -m1 '^ready mqtt=' "$dir/server.out")
  MQTT=$(sed -E 's/.*mqtt=([^ ]+).*/\1/' <<<"$ready")
  MQTTS=$(sed -nE 's/.*mqtts=([^ ]+).*/\1/p' <<<"$ready")
  METRICS_URL="http://$(sed -E 's/.*metrics=([^ ]+).*/\1/' <<<"$ready")/metrics"
  curl -sf "$METRICS_URL" >"$dir/metrics-before.txt"
  log "server pid $SERVER_PID: mqtt $MQTT${MQTTS:+, mqtts $MQTTS}; $(sed 's/\x1b\[[0-9;]*m//g' "$dir/server.log" | grep -o 'device_sessions=[0-9]*' | head -1)"
}

# sim_start DIR ARGS...: the simulator in the background; sets SIM_PID.
sim_start() {
  local dir=$1
  shift
  "$SIM" run --no-register --seed "$SEED" --no-progress --result "$dir/sim.json" "$@" >"$dir/sim.log" 2>&1 &
  SIM_PID=$!
  PIDS+=("$SIM_PID")
}

# sim_wait SECONDS: waits for the simulator, stopping it after SECONDS.
sim_wait() {
  local deadline=$((SECONDS + $1)) rc=0
  while kill -0 "$SIM_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
  if kill -0 "$SIM_PID" 2>/dev/null; then
    log "warning: the simulator still runs after $1 s; stopping it"
    stop_pid "$SIM_PID" INT 40
    return
  fi
  wait "$SIM_PID" || rc=$?
  forget_pid "$SIM_PID"
  [ "$rc" = 0 ] || log "warning: simulator exit $rc: $(grep -m1 -i error "$DIR/sim.log" | cut -c1-160)"
}

# established PORT CSV: every 2 s, established TCP connections on the
# local PORT, until the file $CSV.stop appears.
established() {
  local port=$1 csv=$2 t0=$EPOCHREALTIME
  echo "t_s,established" >"$csv"
  while [ ! -e "$csv.stop" ]; do
    printf '%s,%s\n' "$(awk -v a="$EPOCHREALTIME" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')" \
      "$(ss -Htn state established "( sport = :$port )" | wc -l)" >>"$csv"
    sleep 2
  done
}

# connect_figures JSON -> "connacks sessions connacks_per_s all_connected_s errors"
connect_figures() {
  jq -r '[.connect.connacks // "-", .connect.sessions // "-",
      (.connect.connacks_per_s // "-" | if type == "number" then (. + 0.5 | floor) else . end),
      (.connect.all_connected_s // "-" | if type == "number" then (. * 10 + 0.5 | floor) / 10 else . end),
      .messages.connection_errors // "-"] | map(tostring) | join(" ")' "$1" 2>/dev/null || echo "- - - - -"
}

# steady CSV BASE_FDS BASE_RSS_KIB -> "live_max t_from t_to rss_mib hwm_mib
# cpu_pct intake_per_s sim_cpu busy kib_per_session ramp_cpu teardown_s
# teardown_cpu" (see the header): live sessions are the descriptors over
# BASE_FDS; the ramp runs until they first reach 99.5 % of their highest
# count, the steady window from 5 s after that to 3 s before they last
# are there, the teardown from then until fewer than 1 % are left.
steady() {
  awk -F, -v base="$2" -v base_rss="$3" -v hz="$CLK_TCK" 'NR > 1 && $15 != "" {
      n++; t[n] = $1; cpu[n] = $2; rss[n] = $3; sim[n] = $5; busy[n] = $7; acc[n] = $8
      live[n] = $15 - base; tk[n] = $16; if (live[n] > lmax) lmax = live[n]; if ($4 > h) h = $4 }
    END {
      full = 0.995 * lmax; top = 0; end = 0; gone = 0
      for (i = 1; i <= n; i++) if (live[i] >= full) { if (!top) top = i; end = i }
      for (i = end + 1; i <= n; i++) if (live[i] < 0.01 * lmax) { gone = i; break }
      a = 0; for (i = top; i <= end; i++) if (t[i] >= t[top] + 5) { a = i; break }
      b = 0; for (i = end; i >= top; i--) if (t[i] <= t[end] - 3) { b = i; break }
      rc = 0; for (i = 1; i <= top; i++) rc += cpu[i]; rc = (top > 0) ? rc / top : 0
      td = "-"; tc = "-"
      if (gone) { td = sprintf("%.0f", t[gone] - t[end]); for (i = end + 1; i <= gone; i++) s2 += cpu[i]; tc = sprintf("%.0f", s2 / (gone - end)) }
      if (!a || !b || b <= a) { printf "%d - - - %.0f - - - - - %.0f %s %s\n", lmax, h / 1024, rc, td, tc; exit }
      for (i = a; i <= b; i++) { r += rss[i]; s += sim[i]; m += busy[i] }
      k = b - a + 1; dt = t[b] - t[a]
      per = (base_rss != "" && lmax > 0) ? sprintf("%.1f", (r / k - base_rss) / lmax) : "-"
      printf "%d %.0f %.0f %.0f %.0f %.1f %.0f %.0f %.0f %s %.0f %s %s\n", lmax, t[a], t[b], r / k / 1024, h / 1024,
        100 * (tk[b] - tk[a]) / hz / dt, (acc[b] - acc[a]) / dt, s / k, m / k, per, rc, td, tc
    }' "$1"
}

SIM_FLEET_ARGS=(--homes "$FLEET_HOMES" --procs "$FLEET_PROCS" --connect-concurrency "$FLEET_CONCURRENCY"
  --duration-s "$FLEET_DURATION_S")
[ -n "$FLEET_SOURCE_ADDRS" ] && SIM_FLEET_ARGS+=(--source-addrs "$FLEET_SOURCE_ADDRS")
[ "$FLEET_MQTT5" = 1 ] && SIM_FLEET_ARGS+=(--mqtt5)
# The simulator's own limit: the fleet connects, then lives for the duration.
SIM_DEADLINE=$((FLEET_DURATION_S + 600))

# --- part 1: the fleet on one server ---------------------------------------------
DIR=$OUT/fleet-eldercare
mkdir -p "$DIR"
log "part 1: $FLEET_SESSIONS sessions ($FLEET_HOMES homes) on one server"
import_homes "$FLEET_HOMES" fleet "$WORK/data-fleet" "$DIR"
config "$WORK/plain.toml"
server_start fleet "$WORK/data-fleet" "$WORK/plain.toml" "$DIR"
FLEET_PID=$SERVER_PID
FLEET_METRICS=$METRICS_URL
BASE_FDS=$(fds "$FLEET_PID")
BASE_RSS=$(status_kib "$FLEET_PID" VmRSS)
established "${MQTT##*:}" "$DIR/established.csv" &
EST_PID=$!
PIDS+=("$EST_PID")
sampler "$FLEET_PID" "$FLEET_METRICS" "$DIR/samples-eldercare.csv" "$DIR/.sim.pid" &
SAMPLER_PID=$!
PIDS+=("$SAMPLER_PID")
sim_start "$DIR" "${SIM_FLEET_ARGS[@]}" --mqtt-addr "$MQTT"
echo "$SIM_PID" >"$DIR/.sim.pid"
sim_wait "$SIM_DEADLINE"
sleep 2
curl -sf "$FLEET_METRICS" >"$DIR/metrics-after.txt" || true
touch "$DIR/established.csv.stop"
stop_pid "$EST_PID" TERM 5
stop_pid "$FLEET_PID" TERM 60
stop_pid "$SAMPLER_PID" TERM 5
read -r E_CONNACKS E_SESSIONS E_RATE E_ALL E_ERR < <(connect_figures "$DIR/sim.json")
read -r E_LIVE E_FROM E_TO E_RSS E_HWM E_CPU E_INTAKE E_SIMCPU E_BUSY E_PER E_RAMPCPU E_TD E_TDCPU \
  < <(steady "$DIR/samples-eldercare.csv" "$BASE_FDS" "$BASE_RSS")
E_EST=$(awk -F, 'NR > 1 && $2 > m { m = $2 } END { print m + 0 }' "$DIR/established.csv")
E_CAP=$(metric "$DIR/metrics-before.txt" eldercare_device_sessions_capacity)
E_CONNS=$(metric "$DIR/metrics-after.txt" eldercare_mqtt_connections_total)
E_REFUSED=$(metric "$DIR/metrics-after.txt" eldercare_mqtt_connections_refused_total)
E_CLOSED=$(metric "$DIR/metrics-after.txt" eldercare_mqtt_connections_closed_total)
E_ACCEPT_ERR=$(metric "$DIR/metrics-after.txt" eldercare_mqtt_accept_errors_total)
E_SENT=$(jq -r '.messages.sent // "-"' "$DIR/sim.json" 2>/dev/null || echo -)
E_ACCEPTED=$(($(metric "$DIR/metrics-after.txt" eldercare_ingest_accepted_total) - $(metric "$DIR/metrics-before.txt" eldercare_ingest_accepted_total)))
log "eldercare: $E_CONNACKS of $E_SESSIONS CONNACKs, $E_RATE/s, all connected after $E_ALL s; live sessions $E_LIVE (ss: $E_EST); RSS steady $E_RSS MiB peak $E_HWM MiB ($E_PER KiB a session over $((BASE_RSS / 1024)) MiB before); CPU $E_CPU % of a core (ramp $E_RAMPCPU %); intake $E_INTAKE msg/s; teardown $E_TD s at $E_TDCPU % CPU"

# --- part 2: the same fleet on Mosquitto ------------------------------------------
M_CONNACKS=- M_SESSIONS=- M_RATE=- M_ALL=- M_ERR=- M_RSS=- M_HWM=- M_CPU=- M_VERSION=- M_PER=- M_RAMPCPU=- M_TD=- M_TDCPU=- M_BASE_RSS=""
if [ "$PEER" = 1 ]; then
  DIR=$OUT/fleet-mosquitto
  mkdir -p "$DIR"
  log "part 2: the same fleet on Mosquitto"
  MPORT=$(free_port)
  MCONF=$WORK/mosquitto.conf
  cat >"$MCONF" <<EOF
listener $MPORT 127.0.0.1
allow_anonymous true
max_connections -1
persistence false
log_dest file $DIR/mosquitto.log
log_type error
log_type warning
EOF
  # As root Mosquitto would switch to its own user and lose the log file.
  [ "$(id -u)" = 0 ] && echo "user root" >>"$MCONF"
  (ulimit -n "$(ulimit -Hn)" && exec "$MOSQUITTO" -c "$MCONF") >"$DIR/mosquitto.out" 2>&1 &
  MOSQ_PID=$!
  PIDS+=("$MOSQ_PID")
  for _ in $(seq 100); do
    [ -n "$(ss -Htln "( sport = :$MPORT )")" ] && break
    kill -0 "$MOSQ_PID" 2>/dev/null || die "mosquitto did not start: $(cat "$DIR/mosquitto.out")"
    sleep 0.1
  done
  M_BASE_RSS=$(status_kib "$MOSQ_PID" VmRSS)
  M_BASE_FDS=$(fds "$MOSQ_PID")
  M_VERSION=$({ "$MOSQUITTO" -h 2>/dev/null || true; } | awk '/version/ { print $3; exit }')
  sampler "$MOSQ_PID" "" "$DIR/samples-mosquitto.csv" "$DIR/.sim.pid" &
  SAMPLER_PID=$!
  PIDS+=("$SAMPLER_PID")
  sim_start "$DIR" "${SIM_FLEET_ARGS[@]}" --mqtt-addr "127.0.0.1:$MPORT"
  echo "$SIM_PID" >"$DIR/.sim.pid"
  sim_wait "$SIM_DEADLINE"
  stop_pid "$MOSQ_PID" TERM 30
  stop_pid "$SAMPLER_PID" TERM 5
  read -r M_CONNACKS M_SESSIONS M_RATE M_ALL M_ERR < <(connect_figures "$DIR/sim.json")
  read -r _ _ _ M_RSS M_HWM M_CPU _ _ _ M_PER M_RAMPCPU M_TD M_TDCPU < <(steady "$DIR/samples-mosquitto.csv" "$M_BASE_FDS" "$M_BASE_RSS")
  log "mosquitto: $M_CONNACKS of $M_SESSIONS CONNACKs, $M_RATE/s, all connected after $M_ALL s; RSS steady $M_RSS MiB ($M_PER KiB a session); CPU $M_CPU % (ramp $M_RAMPCPU %); teardown $M_TD s at $M_TDCPU % CPU"
fi
RATIO=-
if [ "$E_RATE" != - ] && [ "$M_RATE" != - ] && [ "$M_RATE" -gt 0 ]; then
  RATIO=$(awk -v a="$E_RATE" -v b="$M_RATE" 'BEGIN { printf "%.2f", a / b }')
fi

# --- part 3: plain against TLS at the simulator's ceiling --------------------------
TLS_ROWS=()
if [ "$TLS" = 1 ]; then
  log "part 3: $TLS_HOMES homes at $TLS_RATE msg/s offered, plain MQTT against MQTT over TLS"
  mkdir -p "$WORK/tls"
  (
    cd "$WORK/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -keyout ca.key -out ca.pem -subj "/CN=eldercare bench CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout server.key -out server.csr -subj "/CN=127.0.0.1"
    printf '%s\n' "subjectAltName=IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile server.ext -out server.pem
  ) >"$OUT/openssl.log" 2>&1 || die "openssl failed: see $OUT/openssl.log"
  mkdir -p "$OUT/tls"
  import_homes "$TLS_HOMES" tls "$WORK/data-tls" "$OUT/tls"
  config "$WORK/tls.toml" tls
  for ((rep = 1; rep <= TLS_REPS; rep++)); do
    order=(plain tls)
    [ $((rep % 2)) = 0 ] && order=(tls plain)
    for kind in "${order[@]}"; do
      DIR=$OUT/tls/$kind-$rep
      mkdir -p "$DIR"
      log "part 3, pair $rep: $kind"
      server_start tls "$WORK/data-tls" "$WORK/tls.toml" "$DIR"
      sampler "$SERVER_PID" "$METRICS_URL" "$DIR/samples-eldercare.csv" "$DIR/.sim.pid" &
      SAMPLER_PID=$!
      PIDS+=("$SAMPLER_PID")
      args=(--homes "$TLS_HOMES" --procs "$TLS_PROCS" --rate "$TLS_RATE" --duration-s "$TLS_DURATION_S")
      if [ "$kind" = tls ]; then
        args+=(--mqtt-addr "$MQTTS" --tls-ca "$WORK/tls/ca.pem")
      else
        args+=(--mqtt-addr "$MQTT")
      fi
      sim_start "$DIR" "${args[@]}"
      echo "$SIM_PID" >"$DIR/.sim.pid"
      sim_wait $((TLS_DURATION_S + 300))
      # What is still queued is taken (and counted) before the stop.
      sleep 3
      curl -sf "$METRICS_URL" >"$DIR/metrics-after.txt" || true
      stop_pid "$SERVER_PID" TERM 60
      stop_pid "$SAMPLER_PID" TERM 5
      read -r cpu_avg cpu_max hwm sim_cpu pg_cpu busy intake after _ < <(summarize "$DIR/samples-eldercare.csv")
      sent=$(jq -r '.messages.sent // "-"' "$DIR/sim.json" 2>/dev/null || echo -)
      offered=$(jq -r '.rate.offered_per_s // "-" | if type == "number" then (. + 0.5 | floor) else . end' "$DIR/sim.json" 2>/dev/null || echo -)
      why=$(jq -r '(.rate.reasons // []) | join("; ")' "$DIR/sim.json" 2>/dev/null || true)
      p99=$(jq -r '.rate.puback_ms.p99 // "-"' "$DIR/sim.json" 2>/dev/null || echo -)
      accepted=$(($(metric "$DIR/metrics-after.txt" eldercare_ingest_accepted_total) - $(metric "$DIR/metrics-before.txt" eldercare_ingest_accepted_total)))
      per_k=$(awk -v c="$cpu_avg" -v i="$intake" 'BEGIN { if (i + 0 > 0) printf "%.2f", c / (i / 1000); else print "-" }')
      log "$kind: offered $offered msg/s, intake $intake msg/s, accepted $accepted of $sent sent; server CPU $cpu_avg % ($per_k % per 1k msg/s), simulator $sim_cpu %, machine $busy %"
      TLS_ROWS+=("$rep|$kind|$offered|$sent|$accepted|$intake|$after|$cpu_avg|$cpu_max|$per_k|$hwm|$sim_cpu|$pg_cpu|$busy|$p99|${why:--}")
    done
  done
fi

# --- report --------------------------------------------------------------------
{
  echo "## eldercare fleet, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $(nproc) CPUs, $(lscpu 2>/dev/null | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r); open files (hard) $(ulimit -Hn); PostgreSQL $PG_VERSION; Mosquitto $M_VERSION; binaries $BUILT."
  echo
  echo "### Part 1-2: $FLEET_SESSIONS sessions ($FLEET_HOMES homes), $FLEET_PROCS simulator processes from $FLEET_SOURCE_ADDRS, MQTT $([ "$FLEET_MQTT5" = 1 ] && echo 5 || echo 3.1.1), ordinary day, $FLEET_DURATION_S s once connected"
  echo
  echo "| broker | CONNACKs / sessions | CONNACKs/s while ramping | all connected after s | broker CPU % while ramping | connection errors | live sessions (descriptors / ss) | steady RSS MiB | peak RSS MiB | KiB a session | CPU % of a core (steady) | intake msg/s (steady) | simulator CPU % / machine busy % (steady) | teardown s / broker CPU % |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  echo "| eldercare | $E_CONNACKS / $E_SESSIONS | $E_RATE | $E_ALL | $E_RAMPCPU | $E_ERR | $E_LIVE / $E_EST | $E_RSS | $E_HWM | $E_PER | $E_CPU | $E_INTAKE | $E_SIMCPU / $E_BUSY | $E_TD / $E_TDCPU |"
  [ "$PEER" = 1 ] && echo "| Mosquitto | $M_CONNACKS / $M_SESSIONS | $M_RATE | $M_ALL | $M_RAMPCPU | $M_ERR | - | $M_RSS | $M_HWM | $M_PER | $M_CPU | - | - | $M_TD / $M_TDCPU |"
  echo
  echo "CONNACKs/s eldercare / Mosquitto: **$RATIO**. Steady window: ${E_FROM}-${E_TO} s of the server's samples; server RSS before the fleet $((BASE_RSS / 1024)) MiB. Teardown: from the last second with every session live to fewer than 1 % left, as the simulator stops."
  echo "Server metrics: eldercare_device_sessions_capacity $E_CAP; eldercare_mqtt_connections_total $E_CONNS; refused $E_REFUSED; closed by the listener $E_CLOSED; accept errors $E_ACCEPT_ERR; readings accepted $E_ACCEPTED of $E_SENT sent."
  if [ "$TLS" = 1 ]; then
    echo
    echo "### Part 3: $TLS_HOMES homes ($((TLS_HOMES * 9)) sessions), $TLS_RATE msg/s offered, $TLS_DURATION_S s a run, plain MQTT 3.1.1 against MQTT 3.1.1 over TLS (ECDSA P-256 certificate)"
    echo
    echo "| pair | transport | simulator offered msg/s | sent | accepted | intake msg/s | accepted after the load | server CPU % avg / max | server CPU % per 1k msg/s | server peak RSS MiB | simulator / PostgreSQL CPU % | machine busy % | PUBACK p99 ms |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for r in "${TLS_ROWS[@]}"; do
      IFS='|' read -r rep kind offered sent accepted intake after ca cm perk hwm sc pc busy p99 why <<<"$r"
      echo "| $rep | $kind | $offered | $sent | $accepted | $intake | $after | $ca / $cm | $perk | $hwm | $sc / $pc | $busy | $p99 |"
    done
    echo
    for ((rep = 1; rep <= TLS_REPS; rep++)); do
      pi=- ti=- pk=- tk=-
      for r in "${TLS_ROWS[@]}"; do
        IFS='|' read -r rp kind _ _ _ intake _ _ _ perk _ <<<"$r"
        [ "$rp" = "$rep" ] || continue
        if [ "$kind" = plain ]; then pi=$intake pk=$perk; else ti=$intake tk=$perk; fi
      done
      awk -v r="$rep" -v pi="$pi" -v ti="$ti" -v pk="$pk" -v tk="$tk" 'BEGIN {
        printf "- pair %s: intake TLS / plain = %s / %s = **%s**; CPU per 1k msg/s TLS / plain = %s / %s = %s\n", r, ti, pi,
          (pi + 0 > 0) ? sprintf("%.2f", ti / pi) : "-", tk, pk, (pk + 0 > 0) ? sprintf("%.2f", tk / pk) : "-" }'
    done
    for r in "${TLS_ROWS[@]}"; do
      IFS='|' read -r rep kind offered _ _ _ _ _ _ _ _ _ _ _ _ why <<<"$r"
      [ "$why" = - ] || echo "- pair $rep, $kind: the simulator offered $offered of $TLS_RATE msg/s: $why"
    done
  fi
} >"$OUT/summary.md"
cat "$OUT/summary.md"
log "raw data in $OUT"
