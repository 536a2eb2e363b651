#!/bin/sh
# Runs every fuzz target for a bounded time, one after another (libFuzzer
# through cargo fuzz, on nightly). Usage: fuzz/run.sh [seconds per target]
# (default 60). New inputs found go to fuzz/target's scratch corpus, never
# into fuzz/corpus/ (kept small in the repository); a crash is written to
# fuzz/artifacts/<target>/ and stops the run with its status.
#
# Needs: rustup's nightly toolchain and `cargo install cargo-fuzz`.
set -eu
seconds="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
targets="dns_request list_parse config_load form_parse sync_bundle"
cargo +nightly fuzz build -O --fuzz-dir "$here"
for target in $targets; do
    scratch="$here/target/corpus/$target"
    mkdir -p "$scratch"
    echo "== $target: $seconds s"
    cargo +nightly fuzz run -O --fuzz-dir "$here" "$target" "$scratch" "$here/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -max_len=4096
done
echo "== all targets ran ${seconds}s each with no crash"
