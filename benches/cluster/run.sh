#!/usr/bin/env bash
# Cluster benchmark: how long a partition's alerts wait when its owner is
# killed, and how much device intake a cluster takes, through one member
# or spread over three, against a single node under the same load.
#
# Usage (from anywhere in the repository):
#   benches/cluster/run.sh
#   ROUNDS=5 INTAKE=0 benches/cluster/run.sh
#   FAILOVER=0 INTAKE_RATE=5000 INTAKE_DURATION_S=30 benches/cluster/run.sh
#
# Every cluster is three Debian `nats-server`s with JetStream on loopback
# (routed as cluster `eldercare`, each with its own store, ready when all
# three answer /healthz and name the same meta leader in /jsz), members
# (`eldercare serve --nats ... --member-id mN`, streams at the default 3
# replicas) and one throwaway PostgreSQL server at its default durability
# (pg_start, benches/common.sh). Each part gets a fresh NATS cluster and a
# fresh database.
#
#  1. Failover (FAILOVER=1): ELDERS elders with one SOS button each, each
#     on its own partition in turn (elder r on partition (r-1) mod 16),
#     registered with `eldercare import`; three members, started one after
#     the other. ROUNDS rounds, each with a fresh elder: the owner of its
#     partition is read from `eldercare cluster status --json`, killed
#     with SIGKILL, and at once the elder's SOS is published with
#     `mosquitto_pub -q 1` through another member (it exits on the
#     PUBACK). Timed from the kill: the PUBACK (mosquitto_pub's exit:
#     connect, publish, PUBACK), the new owner's "Partition taken" log
#     line (the lease run out), its "Partition replayed" line, the alert's
#     detected_at (the desk's clock as it kept the alert raised by the new
#     owner's decision) and the moment `eldercare alerts list` on a live
#     member first shows it (polled every ~0.1 s). Then the killed member
#     starts again with the same id and data dir and the round waits until
#     it owns partitions again, all 16 are owned, no member holds more
#     than its share of three and a desk is active. At the end: SOS alerts
#     listed over gRPC (exactly one per round's elder, none for the
#     others), `eldercare audit verify`, alert_events' seq from 1 to its
#     count with no gap, each decision kept once, and what every member
#     logged (lines `cluster: ...`, warnings) and counted.
#  2. Intake (INTAKE=1): INTAKE_HOMES homes of the simulator (nine
#     devices each, one MQTT session a device), imported with `eldercare
#     import`, driven by three simulator processes, each on its own third
#     of the homes (`eldercare-sim run --part K/3`, the split its --procs
#     children use) and INTAKE_RATE msg/s asked in all, for
#     INTAKE_DURATION_S, each device with at most INTAKE_INFLIGHT QoS 1
#     messages awaiting their PUBACK (see below). The same three processes
#     and load in each case (INTAKE_CASES):
#       single     the single node (no --nats) on the same PostgreSQL: the peer
#       c1         a cluster of one member, every simulator on it
#       c3-one     three members, every simulator on m1
#       c3-spread  three members, simulator K on member K
#     Sampled every second: CPU (utime + stime from /proc) of each
#     nats-server, each eldercare process, PostgreSQL (and its backends)
#     and the simulators, the machine's busy share, and from every
#     member's /metrics: messages taken in (eldercare_cluster_intake_published_total,
#     or on the single node eldercare_intake_records_total: acknowledged
#     to the device), readings judged (eldercare_ingest_accepted_total),
#     stored (eldercare_telemetry_written_total), the owners' lag behind
#     the stream (eldercare_cluster_partition_lag) and intake errors.
#     Intake msg/s is the messages taken in over the steady window (from
#     INTAKE_WARMUP_S after the first message to the end of the load,
#     while every simulator ran); CPU is averaged over the same window, and the
#     longest stretch in it without a message taken in is reported
#     (stalled s). The simulators report what they sent and how many
#     PUBACKs came back.
#
#     Why INTAKE_INFLIGHT is 1 by default, not the simulator's 100: a
#     member publishes each group of device messages (up to 8,192, the
#     intake's max_group) to JetStream back to back before awaiting their
#     acknowledgements, and async-nats holds at most 5,000 publishes
#     awaiting one (its default max_ack_inflight, with back-pressure): a
#     group of more than 5,000 then waits for itself, and the member takes
#     nothing in again (found on the first run: INTAKE_INFLIGHT=100, 2,700
#     sessions). With one message in flight a device, at most 2,700
#     messages queue for one group. INTAKE_INFLIGHT=100 reproduces it.
#
# Knobs (environment variables):
#   FAILOVER           1: part 1; 0: skip                          [1]
#   ROUNDS             failover rounds                             [20]
#   ELDERS             elders registered in part 1 (>= ROUNDS)     [24]
#   LEASE_MS           the members' --cluster-lease-ms             [3000]
#   SETTLE_S           seconds a restarted member may take to own
#                      partitions again before the run stops       [60]
#   INTAKE             1: part 2; 0: skip                          [1]
#   INTAKE_CASES       which cases of part 2, in order             [single c1 c3-one c3-spread]
#   INTAKE_HOMES       homes in part 2 (9 sessions each)           [300]
#   INTAKE_RATE        msg/s asked of the three simulators in all  [20000]
#   INTAKE_DURATION_S  seconds of load a case                      [60]
#   INTAKE_WARMUP_S    seconds left out of the steady window       [10]
#   INTAKE_INFLIGHT    QoS 1 messages a device may have unacknowledged [1]
#   SEED               simulator seed                              [1]
#   OUT                output directory         [target/cluster-<UTC date>]
#   BUILD              1: cargo build --release first              [1]
#   CARGO_TARGET_DIR   where the release binaries are              [<repo>/target]
#   ELDERCARE_PG_BIN   directory of initdb/pg_ctl  [newest /usr/lib/postgresql/*/bin]
#   ELDERCARE_NATS_SERVER  the nats-server binary  [PATH, then /usr/sbin/nats-server]
#   STATUS_TIMEOUT_S   seconds an `eldercare cluster status` call may
#                      take before it is stopped and asked again     [10]
#
# The binaries are copied to a scratch directory before the first run,
# so a build in the same target directory cannot change them mid-run.
#
# Output in $OUT: summary.md (also printed); failover/: rounds.csv (one
# row a round, times in ms from the kill), each member start's stdout
# (mN.K.out: the ready line and the `cluster:` lines) and log (mN.K.log),
# the NATS servers' logs, alerts.jsonl, audit.txt, metrics-mN.txt;
# intake-<case>/: samples.csv (one row a second), sim-K.jsonl (a
# simulator's ticks and result), the servers' logs and metrics.
#
# Needs: cargo, PostgreSQL server binaries and psql, nats-server (Debian
# package nats-server, 2.9 or later), mosquitto_pub (mosquitto-clients),
# curl, jq, ss.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FAILOVER=${FAILOVER:-1}
ROUNDS=${ROUNDS:-20}
ELDERS=${ELDERS:-24}
LEASE_MS=${LEASE_MS:-3000}
SETTLE_S=${SETTLE_S:-60}
INTAKE=${INTAKE:-1}
INTAKE_CASES=${INTAKE_CASES:-single c1 c3-one c3-spread}
INTAKE_HOMES=${INTAKE_HOMES:-300}
INTAKE_RATE=${INTAKE_RATE:-20000}
INTAKE_DURATION_S=${INTAKE_DURATION_S:-60}
INTAKE_WARMUP_S=${INTAKE_WARMUP_S:-10}
INTAKE_INFLIGHT=${INTAKE_INFLIGHT:-1}
SEED=${SEED:-1}
BUILD=${BUILD:-1}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
OUT=${OUT:-$TARGET/cluster-$(date -u +%Y%m%dT%H%M%SZ)}
export LC_ALL=C

BENCH_TAG=cluster
# shellcheck source=../common.sh
. "$REPO/benches/common.sh"

# --- prerequisites -----------------------------------------------------------
for tool in curl jq ss awk mosquitto_pub; do
  command -v "$tool" >/dev/null || die "$tool is needed (Debian: apt-get install -y $([ "$tool" = mosquitto_pub ] && echo mosquitto-clients || echo "$tool"))"
done
NATS=${ELDERCARE_NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
[ -x "$NATS" ] || die "nats-server is needed: apt-get install -y nats-server (or set ELDERCARE_NATS_SERVER)"
pg_find
[ -x "$PG_BIN/psql" ] || die "psql not found in $PG_BIN"
[ "$FAILOVER" = 0 ] || [ "$ELDERS" -ge "$ROUNDS" ] || die "ELDERS ($ELDERS) must be at least ROUNDS ($ROUNDS): each round takes a fresh elder"

# --- build, and a private copy of the binaries ---------------------------------
if [ "$BUILD" = 1 ]; then
  log "building release binaries (eldercare, eldercare-sim)"
  (cd "$REPO" && CARGO_TARGET_DIR=$TARGET nice -n 10 cargo build --release --quiet -p eldercare -p eldercare-sim)
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ec-cluster.XXXXXX")
chmod 755 "$WORK"
for b in eldercare eldercare-sim; do
  [ -x "$TARGET/release/$b" ] || die "$TARGET/release/$b missing (BUILD=1 builds it)"
  cp "$TARGET/release/$b" "$WORK/$b"
done
SERVER=$WORK/eldercare
SIM=$WORK/eldercare-sim
BUILT="built $(date -u -r "$TARGET/release/eldercare" '+%Y-%m-%d %H:%M UTC') (tree at the start of this run: $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- crates simulators 2>/dev/null || echo ' with local changes'))"
NATS_VERSION=$("$NATS" --version 2>/dev/null | awk '{ print $2 }')
log "output in $OUT; binaries: $BUILT; nats-server $NATS_VERSION"

pg_start

TOKENS=$WORK/tokens.toml
TOKEN=$("$SERVER" token add --tokens-file "$TOKENS" --operator bench-operator --role operator 2>/dev/null | tail -1) || true
[ -n "$TOKEN" ] || die "eldercare token add printed no token"

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
db_url() { echo "postgres://postgres@127.0.0.1:$PG_PORT/$1"; }
psql_q() { "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$1" -Atq -F ' ' -c "$2"; }
strip_ansi() { sed 's/\x1b\[[0-9;]*m//g' "$@"; }
# An RFC 3339 time (a log line's, an alert's) as epoch ms.
rfc_ms() { date -u -d "$1" +%s%3N; }

# FNV-1a, 32 bits, mod 16: an elder's partition (docs/cluster.md).
partition_of() {
  local s=$1 h=2166136261 i c
  for ((i = 0; i < ${#s}; i++)); do
    printf -v c '%d' "'${s:i:1}"
    h=$(((h ^ c) * 16777619 & 0xFFFFFFFF))
  done
  echo $((h % 16))
}
fnv_check() {
  local s=$1 h=2166136261 i c
  for ((i = 0; i < ${#s}; i++)); do
    printf -v c '%d' "'${s:i:1}"
    h=$(((h ^ c) * 16777619 & 0xFFFFFFFF))
  done
  printf '%08x' "$h"
}
# The published test vectors of FNV-1a 32.
[ "$(fnv_check a)" = e40c292c ] && [ "$(fnv_check foobar)" = bf9cf968 ] || die "partition hash self-check failed"

# --- a NATS cluster ----------------------------------------------------------
# nats_start NAME DIR: three servers n1-n3, stores in $WORK/nats-NAME,
# logs in DIR; sets NATS_URLS, NATS_PIDS, NATS_MON (monitoring ports).
nats_start() {
  local name=$1 dir=$2 ports=() p i
  while [ ${#ports[@]} -lt 9 ]; do
    p=$(free_port)
    [[ " ${ports[*]} " == *" $p "* ]] || ports+=("$p")
  done
  NATS_PIDS=() NATS_MON=()
  local urls=()
  for i in 0 1 2; do urls+=("nats://127.0.0.1:${ports[3 * i]}"); done
  NATS_URLS=$(IFS=,; echo "${urls[*]}")
  for i in 0 1 2; do
    local routes=() j
    for j in 0 1 2; do [ "$j" = "$i" ] || routes+=("nats://127.0.0.1:${ports[3 * j + 1]}"); done
    mkdir -p "$WORK/nats-$name/n$((i + 1))"
    "$NATS" -a 127.0.0.1 -p "${ports[3 * i]}" -n "n$((i + 1))" -js -sd "$WORK/nats-$name/n$((i + 1))" \
      -m "${ports[3 * i + 2]}" --cluster "nats://127.0.0.1:${ports[3 * i + 1]}" --cluster_name eldercare \
      --routes "$(IFS=,; echo "${routes[*]}")" >"$dir/nats-n$((i + 1)).log" 2>&1 &
    NATS_PIDS+=("$!")
    PIDS+=("$!")
    NATS_MON+=("${ports[3 * i + 2]}")
  done
  local deadline=$((SECONDS + 60)) leaders
  while :; do
    leaders=""
    for i in 0 1 2; do
      kill -0 "${NATS_PIDS[i]}" 2>/dev/null || die "nats-server n$((i + 1)) exited: $(tail -5 "$dir/nats-n$((i + 1)).log")"
      if curl -sf --max-time 2 "http://127.0.0.1:${NATS_MON[i]}/healthz" >/dev/null; then
        leaders+="$(curl -sf --max-time 2 "http://127.0.0.1:${NATS_MON[i]}/jsz" | jq -r '.meta_cluster.leader // "-"') "
      else
        leaders+="- "
      fi
    done
    read -r a b c <<<"$leaders"
    [ "$a" != - ] && [ "$a" = "$b" ] && [ "$b" = "$c" ] && break
    [ $SECONDS -lt $deadline ] || die "the NATS cluster had no agreed meta leader within 60 s (leaders: $leaders)"
    sleep 0.2
  done
  log "NATS cluster $name: $NATS_URLS, meta leader $a (pids ${NATS_PIDS[*]})"
}

# stop_all PID...: TERM to every one at once, then waits for each (KILL
# after 30 s), forgetting them.
stop_all() {
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do stop_pid "$pid" TERM 30; done
}

nats_stop() {
  stop_all "${NATS_PIDS[@]}"
  rm -rf "$WORK/nats-$1"
}

# --- members -------------------------------------------------------------------
# member_start ID DIR DB [single]: starts (or starts again) member ID
# with data dir $WORK/data-DB-ID; its stdout and log in DIR/ID.K.out and
# .log for its K-th start. With `single`, the single node (no --nats).
# Sets M_PID, M_MQTT, M_GRPC, M_METRICS, M_OUT, M_LOG for ID.
declare -A M_PID M_MQTT M_GRPC M_METRICS M_OUT M_LOG M_STARTS
member_start() {
  local id=$1 dir=$2 db=$3 mode=${4:-cluster}
  local k=$((${M_STARTS[$id]:-0} + 1))
  M_STARTS[$id]=$k
  local out=$dir/$id.$k.out lg=$dir/$id.$k.log
  local args=(serve --database-url "$(db_url "$db")" --data-dir "$WORK/data-$db-$id" --tokens-file "$TOKENS"
    --mqtt-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 --http-addr 127.0.0.1:0)
  [ "$mode" = single ] || args+=(--nats "$NATS_URLS" --member-id "$id" --cluster-lease-ms "$LEASE_MS")
  mkdir -p "$WORK/data-$db-$id"
  "$SERVER" "${args[@]}" >"$out" 2>"$lg" &
  local pid=$!
  PIDS+=("$pid")
  # Members are killed on purpose: no job report from the shell for it.
  disown "$pid"
  wait_ready_line "$out" "$pid" || die "$id did not become ready: $(strip_ansi "$lg" | tail -5)"
  local ready
  ready=$(grep -m1 '^ready mqtt=' "$out")
  M_PID[$id]=$pid
  M_MQTT[$id]=$(sed -E 's/.*mqtt=([^ ]+).*/\1/' <<<"$ready")
  M_GRPC[$id]=$(sed -E 's/.*grpc=([^ ]+).*/\1/' <<<"$ready")
  M_METRICS[$id]="http://$(sed -E 's/.*metrics=([^ ]+).*/\1/' <<<"$ready")/metrics"
  M_OUT[$id]=$out
  M_LOG[$id]=$lg
}

# `eldercare cluster status --json`, given STATUS_TIMEOUT_S; a call that
# takes longer is stopped, counted in $OUT/status-timeouts and asked
# again (up to three times). Seen: a call that never returned while
# partitions were being handed back (their snapshots rewritten).
STATUS_TIMEOUT_S=${STATUS_TIMEOUT_S:-10}
status_json() {
  local try rc
  for try in 1 2 3; do
    rc=0
    timeout "$STATUS_TIMEOUT_S" "$SERVER" cluster status --nats "$NATS_URLS" --json 2>/dev/null || rc=$?
    [ "$rc" = 0 ] && return 0
    if [ "$rc" = 124 ]; then
      echo "$(date -u +%H:%M:%S) ${DIR##*/}" >>"$OUT/status-timeouts"
      log "warning: eldercare cluster status did not answer within $STATUS_TIMEOUT_S s; asking again"
    fi
  done
  return 1
}

# settled N [MEMBER]: all 16 partitions owned, a desk, no member above
# ceil(16/N), and MEMBER (if given) owning one or more.
settled() {
  local n=$1 want=${2:-} st
  st=$(status_json) || return 1
  jq -e --argjson n "$n" --arg want "$want" '
    [.partitions[].owner | select(. != null)] as $o
    | ($o | length) == 16 and .desk.owner != null
      and ([$o | group_by(.)[] | length] | max) <= ((16 + $n - 1) / $n | floor)
      and ($want == "" or ($o | index($want)) != null)' <<<"$st" >/dev/null
}

# wait_settled N SECONDS [MEMBER]: settled within SECONDS, or returns 1.
wait_settled() {
  local deadline=$((SECONDS + $2))
  until settled "$1" "${3:-}"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.3
  done
}

# registry_one_button DIR COUNT: elders.csv and devices.csv for COUNT
# elders, elder r on partition (r-1) mod 16, each with an SOS button
# btn-<elder> (secret s-<elder>, heartbeat a day: no offline alert).
registry_one_button() {
  local dir=$1 n=$2 r p k id
  echo "elder_id,name,district,community" >"$dir/elders.csv"
  echo "device_id,kind,elder_id,room,secret,heartbeat_s" >"$dir/devices.csv"
  ELDER_IDS=()
  for ((r = 1; r <= n; r++)); do
    p=$(((r - 1) % 16))
    for ((k = 0; ; k++)); do
      id=$(printf 'FO%02d-%d' "$r" "$k")
      [ "$(partition_of "$id")" = "$p" ] && break
    done
    ELDER_IDS+=("$id")
    echo "$id,Failover $r,D1,C1" >>"$dir/elders.csv"
    echo "btn-$id,sos_button,$id,,s-$id,86400" >>"$dir/devices.csv"
  done
}

import_csv() {
  local db=$1 dir=$2
  "$SERVER" import --database-url "$(db_url "$db")" --data-dir "$WORK/import-$db" \
    "$dir/elders.csv" "$dir/devices.csv" >"$dir/import.log" 2>&1 || die "import failed: $(tail -5 "$dir/import.log")"
}

# The first line of FILE after line N matching the extended regex, with
# its time as epoch ms ("" when none): "ms line".
log_line_after() {
  local file=$1 from=$2 re=$3 line
  line=$(strip_ansi "$file" | tail -n +"$((from + 1))" | grep -m1 -E "$re") || return 0
  printf '%s %s\n' "$(rfc_ms "${line%% *}")" "$line"
}

# --- part 1: failover --------------------------------------------------------------
FO_ROWS=()
FO_CHECKS=()
if [ "$FAILOVER" = 1 ]; then
  DIR=$OUT/failover
  mkdir -p "$DIR"
  log "part 1: failover, $ROUNDS rounds, lease $LEASE_MS ms"
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres failover
  registry_one_button "$DIR" "$ELDERS"
  import_csv failover "$DIR"
  nats_start failover "$DIR"
  for id in m1 m2 m3; do member_start "$id" "$DIR" failover; done
  wait_settled 3 60 || die "the three members did not share the partitions within 60 s: $(status_json)"
  log "members up: m1 ${M_PID[m1]}, m2 ${M_PID[m2]}, m3 ${M_PID[m3]}; $(status_json | jq -c '[.partitions[].owner] | group_by(.) | map({(.[0]): length}) | add') desk $(status_json | jq -r .desk.owner)"
  echo "round,elder,partition,killed,killed_was_desk,via,new_owner,new_desk,puback_ms,taken_ms,replayed_ms,detected_ms,listed_ms,settled_ms" >"$DIR/rounds.csv"
  for ((r = 1; r <= ROUNDS; r++)); do
    elder=${ELDER_IDS[r - 1]}
    p=$(partition_of "$elder")
    st=$(status_json) || die "cluster status failed"
    owner=$(jq -r ".partitions[$p].owner // empty" <<<"$st")
    desk=$(jq -r '.desk.owner // empty' <<<"$st")
    [ -n "$owner" ] || die "round $r: partition $p has no owner: $st"
    via=""
    for id in m1 m2 m3; do
      [ "$id" = "$owner" ] && continue
      [ -z "$via" ] || [ $((r % 2)) = 0 ] && via=$id
    done
    # Where each survivor's output stands before the kill.
    declare -A from_out=() from_log=()
    for id in m1 m2 m3; do
      from_out[$id]=$(wc -l <"${M_OUT[$id]}")
      from_log[$id]=$(strip_ansi "${M_LOG[$id]}" | wc -l)
    done
    host=${M_MQTT[$via]%:*} port=${M_MQTT[$via]##*:}
    t_kill=$(now_ms)
    kill -KILL "${M_PID[$owner]}"
    timeout 60 mosquitto_pub -h "$host" -p "$port" -i "btn-$elder" -u "btn-$elder" -P "s-$elder" -q 1 \
      -t "eldercare/v1/btn-$elder/event" -m "{\"ts\": $t_kill, \"type\": \"sos\"}" ||
      die "round $r: mosquitto_pub to $via failed"
    t_puback=$(now_ms)
    wait "${M_PID[$owner]}" 2>/dev/null || true
    forget_pid "${M_PID[$owner]}"
    # The alert, as any live member lists it.
    detected="" listed=""
    deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ]; do
      a=$("$SERVER" alerts list --grpc-addr "${M_GRPC[$via]}" --token "$TOKEN" --json --limit 1000 2>/dev/null |
        jq -c --arg e "$elder" 'select(.elder_id == $e and (.kind | ascii_downcase) == "sos")' | head -1) || true
      if [ -n "$a" ]; then
        listed=$(now_ms)
        detected=$(rfc_ms "$(jq -r .detected_at <<<"$a")")
        break
      fi
      sleep 0.1
    done
    [ -n "$detected" ] || log "round $r: no SOS alert for $elder within 60 s"
    # Who took the partition, and when by its own log.
    new_owner="" taken="" replayed="" new_desk=""
    for id in m1 m2 m3; do
      [ "$id" = "$owner" ] && continue
      if tail -n +"$((from_out[$id] + 1))" "${M_OUT[$id]}" | grep -qx "cluster: $id owns partition $p"; then
        new_owner=$id
        read -r taken _ < <(log_line_after "${M_LOG[$id]}" "${from_log[$id]}" "Partition taken.*partition=$p( |$)") || true
        read -r replayed _ < <(log_line_after "${M_LOG[$id]}" "${from_log[$id]}" "Partition replayed.*partition=$p( |$)") || true
      fi
      tail -n +"$((from_out[$id] + 1))" "${M_OUT[$id]}" | grep -qx "cluster: $id is the active desk" && new_desk=$id
    done
    # The killed member again, same id and data dir.
    member_start "$owner" "$DIR" failover
    wait_settled 3 "$SETTLE_S" "$owner" || die "round $r: $owner did not own partitions again within $SETTLE_S s: $(status_json)"
    t_settled=$(now_ms)
    d() { [ -n "$1" ] && echo $(($1 - t_kill)) || echo -; }
    row="$r,$elder,$p,$owner,$([ "$owner" = "$desk" ] && echo yes || echo no),$via,${new_owner:--},${new_desk:--},$(d "$t_puback"),$(d "$taken"),$(d "$replayed"),$(d "$detected"),$(d "$listed"),$(d "$t_settled")"
    echo "$row" >>"$DIR/rounds.csv"
    FO_ROWS+=("$row")
    log "round $r: $elder (p$p) owner $owner$([ "$owner" = "$desk" ] && echo ' (desk)') killed; SOS via $via: PUBACK +$(d "$t_puback") ms, taken by ${new_owner:-?} +$(d "$taken"), replayed +$(d "$replayed"), detected +$(d "$detected") ms, listed +$(d "$listed") ms; settled +$(d "$t_settled") ms"
  done
  # Let the last decisions land, then the checks.
  sleep 3
  "$SERVER" alerts list --grpc-addr "${M_GRPC[m1]}" --token "$TOKEN" --json --limit 1000 >"$DIR/alerts.jsonl" 2>"$DIR/alerts.err" || true
  ALERTS_ALL=$(wc -l <"$DIR/alerts.jsonl")
  SOS_ALL=$(jq -c 'select((.kind | ascii_downcase) == "sos")' "$DIR/alerts.jsonl" | wc -l)
  SOS_ONCE=$(jq -r 'select((.kind | ascii_downcase) == "sos") | .elder_id' "$DIR/alerts.jsonl" |
    sort | uniq -c | awk -v want="$(printf '%s\n' "${ELDER_IDS[@]:0:ROUNDS}" | sort | tr '\n' ' ')" '
      { n[$2] = $1 } END { split(want, w, " "); ok = 0; twice = 0; missing = 0
        for (i in w) { if (n[w[i]] == 1) ok++; else if (n[w[i]] > 1) twice++; else missing++; delete n[w[i]] }
        other = 0; for (k in n) other += n[k]
        printf "%d %d %d %d\n", ok, twice, missing, other }')
  read -r SOS_OK SOS_TWICE SOS_MISSING SOS_OTHER <<<"$SOS_ONCE"
  OTHER_KINDS=$(jq -r 'select((.kind | ascii_downcase) != "sos") | .kind' "$DIR/alerts.jsonl" | sort | uniq -c | awk '{ printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1 }')
  OCCURRENCES=$(jq -r 'select((.kind | ascii_downcase) == "sos") | .occurrences' "$DIR/alerts.jsonl" | sort | uniq -c | awk '{ printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1 }')
  AUDIT=$("$SERVER" audit verify --database-url "$(db_url failover)" 2>&1 | tail -1) || true
  echo "$AUDIT" >"$DIR/audit.txt"
  read -r EV_N EV_MIN EV_MAX DEC_N DEC_DISTINCT < <(psql_q failover \
    "SELECT count(*), coalesce(min(seq), 0), coalesce(max(seq), 0), count(decision), count(DISTINCT decision) FROM alert_events")
  HEAD_SEQ=$(psql_q failover "SELECT seq FROM alert_chain_head")
  EV_KINDS=$(psql_q failover "SELECT kind, count(*) FROM alert_events GROUP BY kind ORDER BY kind" | awk '{ printf "%s%s x%s", (NR > 1 ? ", " : ""), $1, $2 }')
  GAPFREE=no
  [ "$EV_MIN" = 1 ] && [ "$EV_MAX" = "$EV_N" ] && [ "$HEAD_SEQ" = "$EV_N" ] && GAPFREE=yes
  # What the members said and counted.
  for id in m1 m2 m3; do curl -sf "${M_METRICS[$id]}" >"$DIR/metrics-$id.txt" || true; done
  {
    for id in m1 m2 m3; do
      owns=$(cat "$DIR/$id".*.out | grep -c "owns partition" || true)
      lost=$(cat "$DIR/$id".*.out | grep -c "lost partition" || true)
      desks=$(cat "$DIR/$id".*.out | grep -c "is the active desk" || true)
      nodesk=$(cat "$DIR/$id".*.out | grep -c "is no longer the desk" || true)
      handed=$(strip_ansi "$DIR/$id".*.log | grep -c "handed back" || true)
      warns=$(strip_ansi "$DIR/$id".*.log | grep -c " WARN " || true)
      errs=$(strip_ansi "$DIR/$id".*.log | grep -c " ERROR " || true)
      echo "$id: ${M_STARTS[$id]} starts; 'owns partition' $owns, 'lost partition' $lost (handed back $handed), 'is the active desk' $desks, 'no longer the desk' $nodesk; WARN lines $warns, ERROR lines $errs; now: fenced $(metric "$DIR/metrics-$id.txt" eldercare_cluster_fenced_total), intake errors $(metric "$DIR/metrics-$id.txt" eldercare_cluster_intake_errors_total), decisions published new $(grep -E '^eldercare_cluster_decisions_published_total\{.*duplicate="false"' "$DIR/metrics-$id.txt" | awk '{ s += $NF } END { print s + 0 }') duplicate $(grep -E '^eldercare_cluster_decisions_published_total\{.*duplicate="true"' "$DIR/metrics-$id.txt" | awk '{ s += $NF } END { print s + 0 }')"
    done
    echo "distinct WARN/ERROR messages (all members, all starts):"
    strip_ansi "$DIR"/m*.log | grep -E ' (WARN|ERROR) ' | sed -E 's/^[^ ]+ +(WARN|ERROR) +//; s/ [a-z_]+=.*$//' | sort | uniq -c | sort -rn | head -20 || true
  } >"$DIR/members.txt"
  stop_all "${M_PID[m1]}" "${M_PID[m2]}" "${M_PID[m3]}"
  nats_stop failover
  FO_STATS=$(tail -n +2 "$DIR/rounds.csv" | awk -F, '
    function stats(col,   n, i, v, a, j, t, med) {
      n = 0; for (i = 1; i <= N; i++) if (row[i, col] != "-") a[++n] = row[i, col] + 0
      if (!n) return "- - - 0"
      for (i = 2; i <= n; i++) { v = a[i]; for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]; a[j + 1] = v }
      med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      return sprintf("%d %d %d %d", a[1], med, a[n], n)
    }
    { N++; for (c = 1; c <= NF; c++) row[N, c] = $c }
    END {
      under = 0; for (i = 1; i <= N; i++) if (row[i, 12] != "-" && row[i, 12] + 0 < 5000) under++
      print stats(9) "|" stats(10) "|" stats(11) "|" stats(12) "|" stats(13) "|" stats(14) "|" under "/" N
    }')
  log "failover: $FO_STATS; SOS alerts $SOS_ALL (one each $SOS_OK, doubled $SOS_TWICE, missing $SOS_MISSING, others $SOS_OTHER); $AUDIT; events $EV_N seq $EV_MIN-$EV_MAX head $HEAD_SEQ"
fi

# --- part 2: intake ------------------------------------------------------------------
# Messages a server took in (acknowledged to their devices) in its
# /metrics text: a member's published to the intake stream (it also
# counts them in eldercare_intake_records_total, its intake's own count),
# the single node's appended to its intake log.
taken_in() {
  if grep -q '^eldercare_cluster_intake_published_total' "$1"; then
    metric "$1" eldercare_cluster_intake_published_total
  else
    metric "$1" eldercare_intake_records_total
  fi
}

# intake_sampler CSV PIDFILE: one row a second while $CSV.stop is absent.
# PIDFILE holds lines "group name pid" (group: nats, member, sim).
intake_sampler() {
  local csv=$1 pidfile=$2
  echo "t_s,nats_cpu,members_cpu,pg_cpu,sim_cpu,machine_busy_pct,intake,judged,written,lag,intake_errors,sims_running,per_process" >"$csv"
  local t0=$EPOCHREALTIME prev_t=$EPOCHREALTIME busy all prev_busy prev_all
  declare -A prev=()
  read -r prev_busy prev_all < <(machine_ticks)
  local prev_pg
  prev_pg=$(pg_ticks)
  local mtmp=$WORK/metrics.$BASHPID
  while [ ! -e "$csv.stop" ]; do
    sleep 1
    local now=$EPOCHREALTIME dt
    dt=$(awk -v a="$now" -v b="$prev_t" 'BEGIN { d = a - b; print (d > 0) ? d : 1 }')
    declare -A grp=()
    local per="" running=0 g name pid cur d
    while read -r g name pid _; do
      if [ "$g" = sim ]; then
        cur=$(tree_ticks "$pid")
        kill -0 "$pid" 2>/dev/null && running=$((running + 1))
      else
        cur=$(ticks "$pid")
      fi
      d=$((cur - ${prev[$pid]:-$cur}))
      [ "$d" -lt 0 ] && d=0
      prev[$pid]=$cur
      grp[$g]=$((${grp[$g]:-0} + d))
      per+="$name=$(awk -v d="$d" -v hz="$CLK_TCK" -v dt="$dt" 'BEGIN { printf "%.0f", 100 * d / hz / dt }') "
    done <"$pidfile"
    local cur_pg
    cur_pg=$(pg_ticks)
    read -r busy all < <(machine_ticks)
    local intake=0 judged=0 written=0 lag=0 errs=0 url
    for url in $(awk '$1 == "member" { print $4 }' "$pidfile"); do
      if curl -sf --max-time 2 "$url" -o "$mtmp"; then
        intake=$((intake + $(taken_in "$mtmp")))
        judged=$((judged + $(metric "$mtmp" eldercare_ingest_accepted_total)))
        written=$((written + $(metric "$mtmp" eldercare_telemetry_written_total)))
        lag=$((lag + $(metric "$mtmp" eldercare_cluster_partition_lag)))
        errs=$((errs + $(metric "$mtmp" eldercare_cluster_intake_errors_total) + $(metric "$mtmp" eldercare_intake_append_errors_total)))
      fi
    done
    awk -v t0="$t0" -v t="$now" -v dt="$dt" -v hz="$CLK_TCK" -v n="${grp[nats]:-0}" -v m="${grp[member]:-0}" \
      -v s="${grp[sim]:-0}" -v g="$cur_pg" -v pg="$prev_pg" -v b="$busy" -v pb="$prev_busy" -v a="$all" -v pa="$prev_all" \
      -v rest="$intake,$judged,$written,$lag,$errs,$running,${per% }" 'BEGIN {
        c = 100 / hz / dt
        printf "%.2f,%.1f,%.1f,%.1f,%.1f,%.1f,%s\n", t - t0, n * c, m * c, ((g > pg) ? g - pg : 0) * c, s * c,
          (a > pa) ? 100 * (b - pb) / (a - pa) : 0, rest }' >>"$csv"
    prev_t=$now prev_pg=$cur_pg prev_busy=$busy prev_all=$all
  done
  rm -f "$mtmp"
}

# intake_figures CSV SIMS -> "rate judged_rate written_rate nats members pg sim busy window_s lag_end stalled_s per_process"
# over the steady window: from INTAKE_WARMUP_S after the first sample
# with intake to the last sample, while all SIMS simulators ran, before
# their load ends (INTAKE_DURATION_S after that first sample, less 2 s:
# a simulator stops sending, then waits for its last PUBACKs).
intake_figures() {
  awk -F, -v warm="$INTAKE_WARMUP_S" -v dur="$INTAKE_DURATION_S" -v sims="$2" 'NR > 1 {
      n++; t[n] = $1; na[n] = $2; me[n] = $3; pg[n] = $4; si[n] = $5; bu[n] = $6
      in_[n] = $7; ju[n] = $8; wr[n] = $9; lag[n] = $10; run[n] = $12; per[n] = $13 }
    END {
      first = 0; for (i = 2; i <= n; i++) if (in_[i] > in_[1]) { first = i; break }
      if (!first) { print "- - - - - - - - - - - -"; exit }
      a = 0; for (i = first; i <= n; i++) if (t[i] >= t[first] + warm) { a = i; break }
      b = 0; for (i = n; i >= 1; i--) if (run[i] == sims && t[i] <= t[first] + dur - 2) { b = i; break }
      if (!a || b <= a) { print "- - - - - - - - - - - -"; exit }
      # The longest stretch, while every simulator ran, without a message taken in.
      st = 0; from = 0
      for (i = first + 1; i <= b; i++) {
        if (in_[i] == in_[i - 1]) { if (!from) from = i - 1; if (t[i] - t[from] > st) st = t[i] - t[from] } else from = 0
      }
      dt = t[b] - t[a]
      for (i = a + 1; i <= b; i++) {
        sn += na[i]; sm += me[i]; sp += pg[i]; ss += si[i]; sb += bu[i]
        k = split(per[i], kv, " "); for (j = 1; j <= k; j++) { split(kv[j], x, "="); pp[x[1]] += x[2]; if (!(x[1] in seen)) { seen[x[1]] = 1; order[++no] = x[1] } }
      }
      q = b - a
      ps = ""; for (j = 1; j <= no; j++) ps = ps (j > 1 ? ";" : "") order[j] "=" sprintf("%.0f", pp[order[j]] / q)
      printf "%.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %d %.0f %s\n", (in_[b] - in_[a]) / dt, (ju[b] - ju[a]) / dt, (wr[b] - wr[a]) / dt,
        sn / q, sm / q, sp / q, ss / q, sb / q, dt, lag[n], st, ps
    }' "$1"
}

INTAKE_ROWS=()
if [ "$INTAKE" = 1 ]; then
  log "part 2: intake, $INTAKE_HOMES homes ($((INTAKE_HOMES * 9)) sessions), $INTAKE_RATE msg/s asked of 3 simulators, $INTAKE_DURATION_S s a case: $INTAKE_CASES"
  mkdir -p "$WORK/registry"
  "$SIM" registry --homes "$INTAKE_HOMES" --seed "$SEED" --out "$WORK/registry" >/dev/null
  for case in $INTAKE_CASES; do
    DIR=$OUT/intake-$case
    mkdir -p "$DIR"
    db=intake_${case//-/_}
    "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"
    cp "$WORK/registry/elders.csv" "$WORK/registry/devices.csv" "$DIR/"
    import_csv "$db" "$DIR"
    rm -f "$DIR/elders.csv" "$DIR/devices.csv"
    M_STARTS=()
    PIDFILE=$DIR/.pids
    : >"$PIDFILE"
    case $case in
      single) members=(s1) ;;
      c1) members=(m1) ;;
      c3-one | c3-spread) members=(m1 m2 m3) ;;
      *) die "unknown intake case $case (single, c1, c3-one, c3-spread)" ;;
    esac
    if [ "$case" = single ]; then
      member_start s1 "$DIR" "$db" single
    else
      nats_start "$case" "$DIR"
      for i in 0 1 2; do echo "nats n$((i + 1)) ${NATS_PIDS[i]}" >>"$PIDFILE"; done
      for id in "${members[@]}"; do member_start "$id" "$DIR" "$db"; done
      wait_settled "${#members[@]}" 60 || die "$case: the members did not share the partitions within 60 s: $(status_json)"
    fi
    for id in "${members[@]}"; do
      echo "member $id ${M_PID[$id]} ${M_METRICS[$id]}" >>"$PIDFILE"
      curl -sf "${M_METRICS[$id]}" >"$DIR/metrics-before-$id.txt" || true
    done
    intake_sampler "$DIR/samples.csv" "$PIDFILE" &
    SAMPLER_PID=$!
    PIDS+=("$SAMPLER_PID")
    sleep 2
    # Three simulators, each on its third of the homes; each reads its
    # stdin until the end of its run (a child of --procs stops when its
    # stdin closes), held open here through a FIFO.
    SIM_PIDS=() SIM_FDS=()
    for k in 0 1 2; do
      target=${members[0]}
      [ "$case" = c3-spread ] && target=${members[k]}
      fifo=$WORK/sim-$case-$k.in
      mkfifo "$fifo"
      exec {fd}<>"$fifo"
      SIM_FDS+=("$fd")
      (
        for f in "${SIM_FDS[@]}"; do eval "exec $f>&-"; done
        exec "$SIM" run --no-register --seed "$SEED" --homes "$INTAKE_HOMES" --rate "$INTAKE_RATE" \
          --duration-s "$INTAKE_DURATION_S" --inflight "$INTAKE_INFLIGHT" --mqtt-addr "${M_MQTT[$target]}" --no-progress --part "$k/3" \
          <"$fifo" >"$DIR/sim-$k.jsonl" 2>"$DIR/sim-$k.log"
      ) &
      SIM_PIDS+=("$!")
      PIDS+=("$!")
      echo "sim sim$k $! -" >>"$PIDFILE"
    done
    log "$case: simulators ${SIM_PIDS[*]} on $(for k in 0 1 2; do [ "$case" = c3-spread ] && echo -n "${members[k]} " || echo -n "${members[0]} "; done)"
    deadline=$((SECONDS + INTAKE_DURATION_S + 300))
    for pid in "${SIM_PIDS[@]}"; do
      while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && log "warning: simulator $pid still runs; stopping it"
      stop_pid "$pid" TERM 10
    done
    for fd in "${SIM_FDS[@]}"; do eval "exec $fd>&-"; done
    # What is still queued is judged and stored before the figures end.
    sleep 5
    touch "$DIR/samples.csv.stop"
    stop_pid "$SAMPLER_PID" TERM 5
    for id in "${members[@]}"; do curl -sf "${M_METRICS[$id]}" >"$DIR/metrics-after-$id.txt" || true; done
    st=""
    [ "$case" = single ] || st=$(status_json || true)
    echo "$st" >"$DIR/status-after.json"
    pids=()
    for id in "${members[@]}"; do pids+=("${M_PID[$id]}"); done
    stop_all "${pids[@]}"
    [ "$case" = single ] || nats_stop "$case"
    # The simulators' own counts.
    read -r sent acked offered simcpu why < <(cat "$DIR"/sim-*.jsonl | jq -rs '
      [.[] | select(.result) | .result] as $r
      | [($r | map(.messages.sent) | add), ($r | map(.messages.acked) | add),
         ($r | map(.rate.offered_per_s) | add | . + 0.5 | floor),
         ($r | map(.rate.simulator_cpu_pct // 0) | add | . + 0.5 | floor),
         ([$r[].rate.reasons // [] | .[]] | unique | join("; ") | if . == "" then "-" else gsub(" "; "_") end)]
      | map(tostring) | join(" ")' 2>/dev/null || echo "- - - - -")
    read -r rate jrate wrate ncpu mcpu pcpu scpu busy win lagend stalled perproc < <(intake_figures "$DIR/samples.csv" 3)
    intake_total=0 judged_total=0
    for id in "${members[@]}"; do
      intake_total=$((intake_total + $(taken_in "$DIR/metrics-after-$id.txt")))
      judged_total=$((judged_total + $(metric "$DIR/metrics-after-$id.txt" eldercare_ingest_accepted_total)))
    done
    errs=$(awk -F, 'END { print $11 }' "$DIR/samples.csv")
    log "$case: intake $rate msg/s (judged $jrate, stored $wrate); CPU % nats $ncpu, eldercare $mcpu, PostgreSQL $pcpu, simulators $scpu, machine busy $busy; simulators sent $sent, PUBACKs $acked, offered $offered msg/s${why:+ ($why)}; taken in $intake_total, judged $judged_total; longest stall $stalled s; lag at end $lagend; per process $perproc"
    INTAKE_ROWS+=("$case|$rate|$jrate|$wrate|$ncpu|$mcpu|$pcpu|$scpu|$busy|$win|$sent|$acked|$offered|$intake_total|$lagend|$errs|$perproc|$judged_total|$stalled|$why")
  done
fi

# --- report ----------------------------------------------------------------------
{
  echo "## eldercare cluster, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  STATUS_TIMEOUTS=0
  [ -f "$OUT/status-timeouts" ] && STATUS_TIMEOUTS=$(wc -l <"$OUT/status-timeouts")
  echo "Machine: $(nproc) CPUs, $(lscpu 2>/dev/null | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), $(free -g | awk '/^Mem:/ { print $2 " GiB total, " $7 " GiB available" }'), Linux $(uname -r); load average at the end $(cut -d' ' -f1-3 /proc/loadavg); PostgreSQL $PG_VERSION; nats-server $NATS_VERSION; binaries $BUILT."
  if [ "$FAILOVER" = 1 ]; then
    IFS='|' read -r s_pub s_taken s_repl s_det s_list s_settle under <<<"$FO_STATS"
    echo
    echo "### Failover: $ROUNDS rounds, kill -9 of the partition's owner, lease $LEASE_MS ms"
    echo
    echo "| from the kill, ms | min | median | max | rounds |"
    echo "|---|---|---|---|---|"
    for x in "PUBACK (mosquitto_pub's exit)|$s_pub" "new owner took the partition (its log)|$s_taken" "new owner replayed it (its log)|$s_repl" "alert detected_at|$s_det" "alert listed over gRPC|$s_list" "killed member back and owning partitions|$s_settle"; do
      IFS='|' read -r what v <<<"$x"
      read -r mn md mx n <<<"$v"
      echo "| $what | $mn | $md | $mx | $n |"
    done
    echo
    echo "Kill to detected_at under 5 s: $under rounds. \`eldercare cluster status\` calls stopped after $STATUS_TIMEOUT_S s without an answer (and asked again): $STATUS_TIMEOUTS$( [ "$STATUS_TIMEOUTS" = 0 ] || echo " ($(awk '{ print $1 " in " $2 }' "$OUT/status-timeouts" | paste -sd, -))")."
    echo
    echo "SOS alerts listed: $SOS_ALL of $ROUNDS expected (one each for $SOS_OK elders, doubled $SOS_TWICE, missing $SOS_MISSING, for elders with no SOS $SOS_OTHER; occurrences: $OCCURRENCES); other alerts: ${OTHER_KINDS:-none}. $AUDIT. alert_events: $EV_N events, seq $EV_MIN-$EV_MAX, chain head $HEAD_SEQ, gap-free: $GAPFREE; kinds: $EV_KINDS; decisions $DEC_N, distinct $DEC_DISTINCT."
    echo
    echo '```'
    cat "$OUT/failover/members.txt"
    echo '```'
    echo
    echo "Rounds (ms from the kill):"
    echo
    echo "| round | elder | partition | killed | it was the desk | SOS via | new owner | new desk | PUBACK | taken | replayed | detected_at | listed | back |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for row in "${FO_ROWS[@]}"; do echo "| ${row//,/ | } |"; done
  fi
  if [ "$INTAKE" = 1 ]; then
    echo
    echo "### Intake: $INTAKE_HOMES homes ($((INTAKE_HOMES * 9)) sessions) from 3 simulator processes, $INTAKE_RATE msg/s asked, at most $INTAKE_INFLIGHT message(s) in flight a device, $INTAKE_DURATION_S s a case; steady window from ${INTAKE_WARMUP_S} s after the first message"
    echo
    echo "| case | intake msg/s | judged / stored msg/s | CPU % of a core: nats-servers / eldercare / PostgreSQL / simulators | nats-servers + eldercare CPU % per 1k msg/s | machine busy % | simulators sent / PUBACKs / offered msg/s | taken in / judged, whole run | longest stall s | owners' lag at end | intake errors | per process CPU % |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    base=""
    for r in "${INTAKE_ROWS[@]}"; do
      IFS='|' read -r c rate jr wr nc mc pc sc bu win sent acked off tot lag errs per jtot stl why <<<"$r"
      [ "$c" = single ] && base=$rate
      perk=$(awk -v n="$nc" -v m="$mc" -v r="$rate" 'BEGIN { if (r + 0 > 0) printf "%.1f", (n + m) / (r / 1000); else print "-" }')
      echo "| $c | $rate | $jr / $wr | $nc / $mc / $pc / $sc | $perk | $bu | $sent / $acked / $off | $tot / $jtot | $stl | $lag | $errs | ${per//;/, } |"
    done
    echo
    for r in "${INTAKE_ROWS[@]}"; do
      IFS='|' read -r c rate _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ why <<<"$r"
      [ -n "$base" ] && [ "$c" != single ] && awk -v c="$c" -v a="$rate" -v b="$base" 'BEGIN { if (b + 0 > 0 && a != "-") printf "- %s / single node: %.2f\n", c, a / b }'
      [ "$why" = - ] || echo "- $c: the simulators fell short of the rate asked: ${why//_/ }"
    done
    c1=""; c3o=""; c3s=""
    for r in "${INTAKE_ROWS[@]}"; do
      IFS='|' read -r c rate _ <<<"$r"
      case $c in c1) c1=$rate ;; c3-one) c3o=$rate ;; c3-spread) c3s=$rate ;; esac
    done
    [ -n "$c3s" ] && [ -n "$c3o" ] && awk -v a="$c3s" -v b="$c3o" 'BEGIN { if (b + 0 > 0) printf "- three members, spread / through one: %.2f\n", a / b }'
    [ -n "$c3s" ] && [ -n "$c1" ] && awk -v a="$c3s" -v b="$c1" 'BEGIN { if (b + 0 > 0) printf "- three members, spread / a cluster of one: %.2f\n", a / b }'
    [ "$FAILOVER" = 1 ] || [ "$STATUS_TIMEOUTS" = 0 ] || echo "- \`eldercare cluster status\` calls stopped after $STATUS_TIMEOUT_S s without an answer: $STATUS_TIMEOUTS"
  fi
} >"$OUT/summary.md"
cat "$OUT/summary.md"
log "raw data in $OUT"
