#!/usr/bin/env bash
# `make fuzz`: runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each.
# cargo-fuzz needs nightly compiler features; RUSTC_BOOTSTRAP=1 unlocks them on the stable
# toolchain. Options: FUZZ_TARGETS="envelope_decode ..." (default: all), FUZZ_SANITIZER
# (address, or none where AddressSanitizer is unavailable). New corpus entries stay in
# fuzz/corpus/<target>/ (not committed); crashes land in fuzz/artifacts/<target>/.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$RELAY_ROOT/fuzz"

seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz (once)"
  cargo install cargo-fuzz --locked
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
logs="$RELAY_ROOT/.stack/fuzz"
mkdir -p "$logs"
nice -n 10 cargo fuzz build --sanitizer "$sanitizer"

failed=0
summary=()
for target in $targets; do
  log "fuzzing $target for ${seconds}s (log: $logs/$target.log)"
  mkdir -p "corpus/$target"
  if nice -n 10 cargo fuzz run --sanitizer "$sanitizer" "$target" "corpus/$target" -- \
      -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$logs/$target.log" 2>&1; then
    outcome="no crash"
  else
    outcome="FAILED (see $logs/$target.log and fuzz/artifacts/$target/)"
    failed=1
  fi
  runs="$(grep -o 'Done [0-9]* runs in [0-9]* second' "$logs/$target.log" | tail -1)"
  summary+=("$target: ${runs:-no run count}s, corpus $(ls "corpus/$target" | wc -l) inputs, $outcome")
done

log "summary"
for line in "${summary[@]}"; do log "  $line"; done
exit "$failed"
