# Shared by the benchmark scripts (benches/e2e/run.sh, benches/fleet/run.sh):
# sourced, not run. The sourcing script sets BENCH_TAG (its log prefix),
# OUT (output directory, for PostgreSQL's initdb log) and, before
# pg_start, WORK (a scratch directory, removed on exit).
#
# What it holds: logging; the processes a script starts (PIDS, stopped
# in reverse order on exit, PostgreSQL by PG_STOP); a throwaway
# PostgreSQL server at its default durability (pg_start); free ports;
# the once-a-second sampler of a server process (CPU, RSS, peak RSS,
# open descriptors, the ingest counters from /metrics) and the figures
# taken from its samples (load_rate, summarize).

log() { printf '[%s %s] %s\n' "${BENCH_TAG:-bench}" "$(date -u +%H:%M:%S)" "$*" >&2; }
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

# PostgreSQL's server binaries: ELDERCARE_PG_BIN, initdb on PATH, or the
# newest /usr/lib/postgresql/*/bin.
pg_bin_dir() {
  local d
  if [ -n "${ELDERCARE_PG_BIN:-}" ]; then echo "$ELDERCARE_PG_BIN"; return; fi
  # A link on PATH (e.g. /usr/local/bin/initdb) leads to the real directory.
  if d=$(command -v initdb); then dirname "$(readlink -f "$d")"; return; fi
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$d" ] && echo "$d"
}

free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 40000))
    if [ -z "$(ss -Htan "( sport = :$p )")" ]; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

# pg_find: sets PG_BIN, or stops the script saying what to install.
pg_find() {
  PG_BIN=$(pg_bin_dir) || true
  [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] && [ -x "$PG_BIN/createdb" ] ||
    die "PostgreSQL binaries (initdb, pg_ctl, createdb) not found: apt-get install postgresql, or set ELDERCARE_PG_BIN"
}

# pg_start: initdb and start a throwaway PostgreSQL server in $WORK/pg
# (pg_find first); sets PG_PORT, PG_PID, PG_VERSION and PG_STOP (run by
# cleanup).
pg_start() {
  PG_DIR=$WORK/pg
  mkdir -p "$PG_DIR"
  local pg_as=()
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
    # PostgreSQL's default durability (fsync, synchronous commit, full-page
    # writes): a benchmark measures what production runs.
    if LC_ALL=C "${pg_as[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
      -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200" \
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
}

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
# The same for a process and its children (the simulator's --procs).
tree_ticks() {
  local t=0 p
  for p in $1 $(pgrep -P "$1" 2>/dev/null); do t=$((t + $(ticks "$p"))); done
  echo "$t"
}
# Open descriptors of a pid (one per device session in the server), "" when gone.
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
machine_ticks() { awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8; print busy, busy + $5 + $6 }' /proc/stat; }

# One number from Prometheus text: the sum of a metric over its labels.
metric() {
  awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%d\n", s }' "$1"
}

# sampler PID METRICS_URL CSV SIMPID_FILE: one row a second until stopped.
sampler() {
  local pid=$1 url=$2 csv=$3 simfile=$4
  local hdr="t_s,cpu_pct,rss_kib,hwm_kib,sim_cpu_pct,pg_cpu_pct,machine_busy_pct,accepted,written,dropped,duplicates,refused,sim_running,connections,fds,cpu_ticks"
  echo "$hdr" >"$csv"
  local t0=$EPOCHREALTIME prev_t=$EPOCHREALTIME
  local prev=$(ticks "$pid") prev_pg=$(pg_ticks) sim_pid="" prev_sim=0
  local m prev_busy prev_all busy all
  read -r prev_busy prev_all < <(machine_ticks)
  local mtmp=$WORK/sample.$$.$BASHPID
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    local now=$EPOCHREALTIME
    [ -z "$sim_pid" ] && [ -s "$simfile" ] && { sim_pid=$(cat "$simfile"); prev_sim=$(tree_ticks "$sim_pid"); }
    local cur cur_pg cur_sim=0 running=0
    cur=$(ticks "$pid")
    cur_pg=$(pg_ticks)
    if [ -n "$sim_pid" ] && kill -0 "$sim_pid" 2>/dev/null; then
      running=1
      cur_sim=$(tree_ticks "$sim_pid")
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
      -v rest="$acc,$wr,$dr,$dup,$ref,$running,$conn,$(fds "$pid"),$cur" 'BEGIN {
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
