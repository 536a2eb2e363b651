#!/usr/bin/env bash
# Resident memory of a running server with big lists, and its peak during a
# hot reload. For each list set (the 2.27M real adult names, the UT1
# snapshot, 5M synthetic names): compile, start `hedgerow serve` (query log
# on, as shipped), ask 2,000 names, read VmRSS ("steady"); then touch a list
# and run `hedgerow lists reload` (the server sees the change and compiles in
# a child process, as its scheduled updates do), ask again, and read the
# server's peak (VmHWM, reset just before the reload).
#
#   benches/server_memory.sh            # all three
#   CASES="adult" benches/server_memory.sh
#
# Needs dig (dnsutils). Prints one line per case.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DATA="$ROOT/../shared/data"
WORK=$(mktemp -d /tmp/hedgerow-mem.XXXXXX)
trap 'pkill -f "$WORK/" 2>/dev/null || true; rm -rf "$WORK"' EXIT
cargo build --release --quiet --bins --benches
BIN="$ROOT/target/release/hedgerow"
PORT=5391

kib() { awk -v key="$1:" '$1 == key { print $2 }' "/proc/$2/status"; }

write_case() { # case -> writes $WORK/$1/lists/*.toml
  local dir="$WORK/$1/lists"
  mkdir -p "$dir"
  case "$1" in
    adult)
      printf '[[source]]\nid = "adult"\ncategory = "pornography"\nformat = "domains"\npath = "%s"\n' \
        "$DATA/adult/domains.txt" > "$dir/adult.toml" ;;
    ut1)
      # Every UT1 folder lists/ut1.toml maps, from the local snapshot.
      python3 - "$ROOT/lists/ut1.toml" "$DATA/ut1" > "$dir/ut1.toml" <<'PY'
import sys, tomllib, os
declared = tomllib.load(open(sys.argv[1], "rb"))["source"]
for source in declared:
    folder = source.get("member", "").split("/")[0]
    path = os.path.join(sys.argv[2], folder + ".domains")
    if os.path.isfile(path):
        print(f'[[source]]\nid = "{source["id"]}"\ncategory = "{source["category"]}"\nformat = "domains"\npath = "{path}"\n')
PY
      ;;
    synthetic)
      "$(ls -t "$ROOT"/target/release/deps/lists_memory-* | grep -v '\.d$' | head -1)" --write-synthetic "$WORK/synthetic.txt"
      printf '[[source]]\nid = "synthetic"\ncategory = "pornography"\nformat = "domains"\npath = "%s"\n' \
        "$WORK/synthetic.txt" > "$dir/synthetic.toml" ;;
  esac
  cat > "$WORK/$1/hedgerow.toml" <<TOML
data_dir = "$WORK/$1/data"
[dns]
listen = ["127.0.0.1:$PORT"]
[upstream]
mode = "forward"
timeout_ms = 200
[[upstream.servers]]
address = "127.0.0.1:9"
[lists]
dir = "$dir"
update_hours = 0
[[networks]]
name = "bench"
cidrs = ["127.0.0.0/8"]
group = "pupil"
TOML
}

ask_many() { # 2,000 names, listed and not (no upstream: unlisted ones fail fast)
  head -n 1000 "$1" | sed 's/^/www./' > "$WORK/names.txt"
  for i in $(seq 1000); do echo "nx$i.example.org"; done >> "$WORK/names.txt"
  dig @127.0.0.1 -p "$PORT" +tries=1 +timeout=1 -f "$WORK/names.txt" > /dev/null 2>&1 || true
}

for case in ${CASES:-adult ut1 synthetic}; do
  write_case "$case"
  config="$WORK/$case/hedgerow.toml"
  "$BIN" lists compile --config "$config" | tail -1
  "$BIN" serve --config "$config" > "$WORK/$case/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do dig @127.0.0.1 -p "$PORT" +tries=1 +timeout=1 example.org > /dev/null 2>&1 && break; sleep 0.2; done
  list_file=$(awk -F'"' '/^path/ { print $2; exit }' "$WORK/$case/lists/"*.toml)
  ask_many "$list_file"
  steady=$(kib VmRSS "$pid")
  echo 5 > "/proc/$pid/clear_refs" # resets VmHWM to the current RSS
  touch "$list_file"
  "$BIN" lists reload --config "$config"
  for _ in $(seq 1200); do grep -q "lists reloaded" "$WORK/$case/serve.log" && break; sleep 0.1; done
  grep -c "compiled by a child process" "$WORK/$case/serve.log" | sed "s/^/child compiles: /"
  ask_many "$list_file"
  peak=$(kib VmHWM "$pid")
  after=$(kib VmRSS "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$case: steady RSS $((steady / 1024)) MB, reload peak $((peak / 1024)) MB ($(python3 -c "print(f'{$peak / $steady:.2f}')")x steady), after reload $((after / 1024)) MB"
done
