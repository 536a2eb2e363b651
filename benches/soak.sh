#!/usr/bin/env bash
# The soak (issue 16, "Prove it holds"): Hedgerow on the shared loopback bed
# (../shared/bench/loopback_bed.py: NSD on 127.0.0.1:5300, its blocked list,
# dnsperf) at half its measured peak for WARMUP + DURATION seconds, with the query
# log, the dashboard, the metrics listener and alerts on (e-mail to an SMTP
# sink on loopback that benches/soak.py runs), while a whole-list reload
# runs every 60 s, a policy change goes through the dashboard's JSON API
# every 30 s, a new device sets off an alert every 15 s and an admin loads a
# dashboard page every 3 s. Checks: no query lost or SERVFAIL, RSS flat
# (last minute within 10% of the first), no log row dropped, every reload
# and policy change in force, every alert e-mailed, every page loaded.
# What each figure is and how it is counted: benches/soak.py's docstring.
#
#   benches/soak.sh                          # 600 s, the peak measured first (15 s at full rate)
#   DURATION=120 PEAK_QPS=8000 benches/soak.sh   # short, at 4,000 queries/s
#   WARMUP=60 benches/soak.sh                # warm-up seconds (default: one pass of the bed's
#                                            # queries.txt at the soak's rate + 30 s, at least 120)
#   BED=/tmp/bed benches/soak.sh             # reuse a generated bed (and its running NSD)
#   HEDGEROW=/path/to/hedgerow benches/soak.sh   # a release binary built already
#
# Everything on loopback; the server pinned to CPU 1, NSD and dnsperf to
# CPU 0 (the bed's layout). One JSON line is appended to
# benches/results/soak-<date>.jsonl and a summary printed; the run's files
# (config, server log, dnsperf output, result.json with every RSS sample)
# stay in $BED/soak-<time>/. Exits 1 when a check fails. A benchmark, not a
# test: .ci/run does not run it.
#
# Needs root for apt-get only if nsd, dnsperf or taskset are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BEDTOOL="$ROOT/../shared/bench/loopback_bed.py"
BED=${BED:-$(mktemp -d /tmp/hedgerow-bed.XXXXXX)}
DURATION=${DURATION:-600}
CLIENTS=${CLIENTS:-8}
RESULTS="$ROOT/benches/results/soak-$(date -u +%F).jsonl"

for tool in nsd dnsperf taskset; do
  command -v "$tool" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nsd dnsperf util-linux >/dev/null; break; }
done
if [ -z "${HEDGEROW:-}" ]; then
  cargo build --release --quiet --bin hedgerow
  HEDGEROW="$ROOT/target/release/hedgerow"
fi
[ -f "$BED/queries.txt" ] || python3 "$BEDTOOL" gen "$BED" --blocked 200000

BEDTOOL="$BEDTOOL" exec python3 "$ROOT/benches/soak.py" --bed "$BED" --hedgerow "$HEDGEROW" \
  --duration "$DURATION" ${WARMUP:+--warmup "$WARMUP"} --clients "$CLIENTS" --results "$RESULTS" ${PEAK_QPS:+--peak-qps "$PEAK_QPS"}
