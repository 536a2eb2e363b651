#!/usr/bin/env bash
# The query log on the loopback bed (issue 12): Hedgerow serving 10,000
# queries/s of the bed's mixed load (70% cached allowed, 20% blocked, 10%
# cache misses; dnsperf -Q 10000 -l 60) on a database pre-loaded with the
# synthetic school (`hedgerow synthesize`: a month of 5 M rows a school day,
# its oldest day a school day), in two runs:
#
#   1. "plain":     60 s at 10,000 q/s. Reports p50/p99 (dnsperf -v) and rows
#                   dropped = answers dnsperf got - rows the log gained
#                   (log_hourly counts every row once; in run 2 plus the rows
#                   retention deleted) and the writer's own
#                   "rows dropped" warnings (dropped_total) from its stderr.
#   2. "retention": the same, while retention removes the oldest day (about
#                   5 M rows): `log_retention` (examples/log_retention.rs,
#                   `run_retention` with the clock set so exactly that day is
#                   past 30 days) starts 10 s into the run on the server's CPU.
#                   Reports p99 beside run 1's, rows dropped, retention seconds.
#
#   3. "dashboard": the same, while an admin clicks through the dashboard
#                   (benches/click_dashboard.py on CPU 0, the client's side,
#                   in the idle class there as if on another machine:
#                   overview, explorer searches and paging, a device page, a
#                   7-day CSV export, policy and logs pages, one after another,
#                   CLICK_PAUSE seconds apart: 0 (default) is a stress test,
#                   no real user; 1 a quick reader) for the whole run. Reports
#                   p99 beside run 1's and each page's time (issue 13).
#
# Targets: 0 rows dropped in all; p99 with retention and with the dashboard
# in use within noise of p99 without; retention under 10 s. The server's config keeps 31 days, so its
# own retention thread (which runs at start-up) deletes nothing.
#
#   benches/log_bed.sh                       # full month (about 110 M rows; minutes to generate)
#   DAYS=5 benches/log_bed.sh                # a few days only (the oldest still a school day)
#   BED=/tmp/bed SCHOOL=/tmp/school.db benches/log_bed.sh   # reuse the bed / keep the database
#   ROUNDS=2 benches/log_bed.sh              # plain, retention, dashboard, twice
#   RUNS="plain dashboard" benches/log_bed.sh   # only these runs
#   CLICK_PAUSE=1 RUNS="plain dashboard" benches/log_bed.sh   # the dashboard at a reader's pace
#
# Resolver pinned to CPU 1, NSD and dnsperf to CPU 0 (the bed's layout, as
# benches/load.sh). Results: one JSON line a run in
# benches/results/log-bed-<date>.jsonl and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BEDTOOL="$ROOT/../shared/bench/loopback_bed.py"
BED=${BED:-$(mktemp -d /tmp/hedgerow-bed.XXXXXX)}
ROUNDS=${ROUNDS:-1}
CLICK_PAUSE=${CLICK_PAUSE:-0}
RUNS=${RUNS:-plain retention dashboard}
RESULTS="$ROOT/benches/results/log-bed-$(date -u +%F).jsonl"

for tool in nsd dnsperf sqlite3; do
  command -v "$tool" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nsd dnsperf sqlite3 >/dev/null; break; }
done
cargo build --release --quiet --bin hedgerow --example log_retention
HEDGEROW="$ROOT/target/release/hedgerow"
RETENTION="$ROOT/target/release/examples/log_retention"
[ -f "$BED/queries.txt" ] || python3 "$BEDTOOL" gen "$BED" --blocked 200000

# The synthetic school, ending yesterday, its oldest day a school day.
DATA="$BED/hedgerow-data"
mkdir -p "$DATA"
DB="$DATA/hedgerow.db"
days=${DAYS:-30}
while [ "$(date -u -d "-$days days" +%u)" -ge 6 ]; do days=$((days - 1)); done
SCHOOL=${SCHOOL:-$BED/school.db}
if [ ! -f "$SCHOOL" ]; then
  "$HEDGEROW" synthesize --database "$SCHOOL" --days "$days" --rows-per-day 5000000
fi

cat > "$BED/hedgerow-log.toml" <<TOML
data_dir = "$DATA"
[dns]
listen = ["127.0.0.1:5353"]
[upstream]
mode = "forward"
[[upstream.servers]]
address = "127.0.0.1:5300"
[cache]
size = 400000
memory_mb = 512
[lists]
dir = "$BED/lists"
update_hours = 0
[log]
retention_days = 31
[dashboard]
listen = ["127.0.0.1:8089"]
[groups.staff]
block = ["default", "ads"]
[[networks]]
name = "bench"
cidrs = ["127.0.0.0/8"]
group = "staff"
# The synthetic school's networks, so its device table fits the config.
[[networks]]
name = "pupils"
cidrs = ["10.10.0.0/16"]
group = "pupil"
[[networks]]
name = "staff"
cidrs = ["10.20.0.0/16"]
group = "staff"
[[networks]]
name = "guests"
cidrs = ["10.30.0.0/16"]
group = "guest"
TOML
mkdir -p "$BED/lists"
cat > "$BED/lists/bed.toml" <<TOML
[[source]]
id = "bed-blocked"
category = "ads"
format = "domains"
path = "$BED/blocked.txt"
TOML
"$HEDGEROW" lists compile --config "$BED/hedgerow-log.toml" | tail -1
NSD_PID=$(python3 "$BEDTOOL" authority "$BED")
SERVER_PID=
trap 'kill "$NSD_PID" 2>/dev/null || true; [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true' EXIT

rows_in_log() { sqlite3 "file:$DB?mode=ro" "SELECT coalesce(sum(count), 0) FROM log_hourly"; }

# The admin the dashboard run logs in as (added to each copy of the school).
ADMIN_PASSWORD=bench-password-$$
# A named device of the school whose pages the dashboard run opens.
DEVICE=$(sqlite3 "file:$SCHOOL?mode=ro" "SELECT device FROM log_clients WHERE device != '' LIMIT 1 OFFSET 100")

run() { # NAME: plain, retention or dashboard
  local name=$1
  # The server works on a copy of the school, so each run starts alike.
  rm -f "$DB" "$DB-wal" "$DB-shm"
  cp "$SCHOOL" "$DB"
  echo "$ADMIN_PASSWORD" | "$HEDGEROW" user add --config "$BED/hedgerow-log.toml" --role admin --password-stdin bench > /dev/null
  taskset -c 1 "$HEDGEROW" serve --config "$BED/hedgerow-log.toml" 2> "$BED/server-$name.log" &
  SERVER_PID=$!
  for _ in $(seq 600); do
    python3 -c "import sys; sys.path.insert(0, '$(dirname "$BEDTOOL")'); import loopback_bed as b; sys.exit(0 if b.ask(5353, 'h00001.lab') else 1)" && break
    sleep 0.1
  done
  taskset -c 0 dnsperf -s 127.0.0.1 -p 5353 -d "$BED/warmup.txt" -n 1 -q 200 > /dev/null
  sleep 2
  local before retention_json=null retention_pid= clicks_json=null clicks_pid=
  before=$(rows_in_log)
  if [ "$name" = retention ]; then
    (sleep 10; taskset -c 1 "$RETENTION" "$DB" 30 > "$BED/retention-$name.json") &
    retention_pid=$!
  fi
  if [ "$name" = dashboard ]; then
    taskset -c 0 chrt --idle 0 python3 "$ROOT/benches/click_dashboard.py" http://127.0.0.1:8089 bench "$ADMIN_PASSWORD" 58 "$DEVICE" "$CLICK_PAUSE" \
      > "$BED/clicks-$name.json" &
    clicks_pid=$!
  fi
  taskset -c 0 dnsperf -s 127.0.0.1 -p 5353 -d "$BED/queries-lat.txt" -l 60 -Q 10000 -q 500 -c 8 -v > "$BED/dnsperf-$name.txt"
  if [ -n "$retention_pid" ]; then wait "$retention_pid"; retention_json=$(cat "$BED/retention-$name.json"); fi
  if [ -n "$clicks_pid" ]; then wait "$clicks_pid"; clicks_json=$(cat "$BED/clicks-$name.json"); fi
  sleep 2   # the writer's last batch (flush_interval is 0.5 s)
  kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=
  local after
  after=$(rows_in_log)
  python3 - "$name" "$BED/dnsperf-$name.txt" "$BED/server-$name.log" "$before" "$after" "$retention_json" "$clicks_json" <<'PY' | tee -a "$RESULTS"
import json, re, sys
name, perf, server, before, after, retention, clicks = sys.argv[1:]
out = open(perf).read()
def grab(rx, cast=float):
    m = re.search(rx, out)
    return cast(m.group(1)) if m else None
lat = sorted(float(l.split()[-1]) for l in out.splitlines() if l.startswith(">") and l.split()[-1][0].isdigit())
pick = lambda p: round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000, 3) if lat else None
completed = grab(r"Queries completed:\s+(\d+)", int)
retention = json.loads(retention)
# Retention deletes the removed day's hourly counts too: add them back.
logged = int(after) - int(before) + (retention["rows_deleted"] if retention else 0)
warned = [int(m) for m in re.findall(r"dropped_total\D+(\d+)", open(server).read())]
print(json.dumps({
    "name": name, "qps": grab(r"Queries per second:\s+([\d.]+)"), "completed": completed,
    "lost": grab(r"Queries lost:\s+(\d+)", int), "p50_ms": pick(50), "p99_ms": pick(99),
    "rows_logged": logged, "rows_dropped": max(0, (completed or 0) - logged),
    "writer_dropped_total": max(warned) if warned else 0,
    "retention": retention, "dashboard": json.loads(clicks),
}))
PY
}

for round in $(seq "$ROUNDS"); do
  echo "round $round" >&2
  for name in $RUNS; do run "$name"; done
done

python3 - "$RESULTS" "$ROUNDS" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
for name in ("plain", "retention", "dashboard"):
    runs = [r for r in rows if r["name"] == name][-int(sys.argv[2]):]
    if not runs:
        continue
    p99 = statistics.median(r["p99_ms"] for r in runs if r["p99_ms"] is not None)
    dropped = max(max(r["rows_dropped"], r["writer_dropped_total"]) for r in runs)
    extra = ""
    if name == "retention":
        extra = "; retention " + ", ".join(f"{r['retention']['seconds']:.1f} s for {r['retention']['rows_deleted']} rows" for r in runs)
    if name == "dashboard":
        extra = "; " + ", ".join(f"{r['dashboard']['visits']} page visits, slowest page median "
                                 f"{max(p['median'] for p in r['dashboard']['pages_ms'].values())} ms" for r in runs)
    print(f"{name:9s} p99 {p99:.2f} ms, rows dropped {dropped}{extra}")
PY
