#!/usr/bin/env bash
# Load benchmark: Hedgerow against Unbound on the shared loopback bed
# (../shared/bench/loopback_bed.py): an NSD authority on 127.0.0.1:5300,
# dnsperf as the client, each resolver pinned to CPU 1, alternating A B A B
# in one sitting. Prints one JSON line per run and a summary with the
# cached-QPS ratio and p50/p99 at 10,000 queries per second.
#
#   benches/load.sh                 # 2 rounds, 200k blocked names; Unbound, Hedgerow, Hedgerow without the query log
#   ROUNDS=3 BLOCKED=1000000 benches/load.sh
#   BED=/tmp/bed benches/load.sh    # reuse generated data
#
# Needs root for apt-get only if nsd, unbound or dnsperf are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BEDTOOL="$ROOT/../shared/bench/loopback_bed.py"
BED=${BED:-$(mktemp -d /tmp/hedgerow-bed.XXXXXX)}
BLOCKED=${BLOCKED:-200000}
ROUNDS=${ROUNDS:-2}

for tool in nsd unbound dnsperf; do
  command -v "$tool" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nsd unbound dnsperf >/dev/null; break; }
done
cargo build --release --quiet
[ -f "$BED/queries.txt" ] || python3 "$BEDTOOL" gen "$BED" --blocked "$BLOCKED"

cat > "$BED/hedgerow.toml" <<TOML
data_dir = "$BED/hedgerow-data"
[dns]
listen = ["127.0.0.1:5353"]
[upstream]
mode = "forward"
[[upstream.servers]]
address = "127.0.0.1:5300"
[cache]
# Room for the whole run's working set (about 310,000 answers), as Unbound's
# cache has: entries are bounded in bytes too (about 1 KB an answer).
size = 400000
memory_mb = 512
[lists]
dir = "$BED/lists"
update_hours = 0
[groups.staff]
block = ["default", "ads"]
[[networks]]
name = "bench"
cidrs = ["127.0.0.0/8"]
group = "staff"
TOML
# The same with the query log off, to measure what logging costs.
sed -e 's/^data_dir = .*/data_dir = "'"${BED//\//\\/}"'\/hedgerow-data-nolog"\n[log]\nenabled = false/' "$BED/hedgerow.toml" > "$BED/hedgerow-nolog.toml"
# The bed's blocked.txt, declared as one list in category "ads".
mkdir -p "$BED/lists"
cat > "$BED/lists/bed.toml" <<TOML
[[source]]
id = "bed-blocked"
category = "ads"
format = "domains"
path = "$BED/blocked.txt"
TOML
# Compile once before measuring, as a school's server would have at start.
"$ROOT/target/release/hedgerow" lists compile --config "$BED/hedgerow.toml" | tail -1
python3 "$BEDTOOL" unbound-conf "$BED" 5301 > "$BED/unbound.conf"

NSD_PID=$(python3 "$BEDTOOL" authority "$BED")
trap 'kill "$NSD_PID" 2>/dev/null || true' EXIT
: > "$BED/results.jsonl"
for round in $(seq "$ROUNDS"); do
  echo "round $round" >&2
  python3 "$BEDTOOL" measure "$BED" unbound 5301 -- unbound -d -c "$BED/unbound.conf"
  python3 "$BEDTOOL" measure "$BED" hedgerow 5353 -- "$ROOT/target/release/hedgerow" serve --config "$BED/hedgerow.toml"
  python3 "$BEDTOOL" measure "$BED" hedgerow-nolog 5353 -- "$ROOT/target/release/hedgerow" serve --config "$BED/hedgerow-nolog.toml"
done

python3 - "$BED/results.jsonl" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
def pick(name, f):
    vals = [f(r) for r in rows if r["name"] == name and f(r) is not None]
    return statistics.median(vals) if vals else None
for name in ("unbound", "hedgerow", "hedgerow-nolog"):
    print(f"{name:9s} cached_qps={pick(name, lambda r: r.get('cached_qps'))} "
          f"mixed_qps={pick(name, lambda r: r.get('mixed', {}).get('qps'))} "
          f"p50_ms@10k={pick(name, lambda r: r.get('at_10k_qps', {}).get('p50_ms'))} "
          f"p99_ms@10k={pick(name, lambda r: r.get('at_10k_qps', {}).get('p99_ms'))} "
          f"rss_MiB={pick(name, lambda r: r.get('peak', {}).get('VmRSS_MiB'))}")
# Ratio per round (A B pairs), so both resolvers share the machine's state.
pairs = list(zip([r for r in rows if r["name"] == "unbound"], [r for r in rows if r["name"] == "hedgerow"]))
for i, (u, h) in enumerate(pairs, 1):
    if u.get("cached_qps") and h.get("cached_qps"):
        print(f"round {i}: cached ratio hedgerow/unbound = {h['cached_qps'] / u['cached_qps']:.2f}, "
              f"mixed ratio = {h['mixed']['qps'] / u['mixed']['qps']:.2f}")
for i, (h, n) in enumerate(zip([r for r in rows if r["name"] == "hedgerow"], [r for r in rows if r["name"] == "hedgerow-nolog"]), 1):
    if h.get("mixed") and n.get("mixed"):
        print(f"round {i}: logging costs {100 * (1 - h['mixed']['qps'] / n['mixed']['qps']):.1f}% of mixed QPS, "
              f"{100 * (1 - h['cached_qps'] / n['cached_qps']):.1f}% of cached QPS")
PY
