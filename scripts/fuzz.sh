#!/usr/bin/env bash
# Fuzz prenv's input handling for a while: every target in fuzz/ (payload, naming, render) runs
# for SECONDS (default 30), starting from the project's own seed inputs in fuzz/seeds/ plus
# whatever fuzz/corpus/ has kept from earlier runs.
#
# Works on stable Rust: cargo-fuzz needs nightly only for sanitizers, and the code under test
# is safe Rust, so `--sanitizer none` loses nothing that matters here (panics, overflows,
# timeouts and memory blow-ups are still caught). A failing input is saved under
# fuzz/artifacts/<target>/ and the script fails; reproduce it with
#   cd fuzz && cargo fuzz run --sanitizer none <target> artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-30}"

# libFuzzer itself is C++, built by libfuzzer-sys.
if ! command -v c++ >/dev/null 2>&1; then
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz --version '^0.13'
fi

cargo fuzz build --sanitizer none
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  echo "fuzz.sh: $target for ${seconds}s" >&2
  # -timeout: one input taking longer is a hang; -rss_limit_mb: more is a memory blow-up.
  cargo fuzz run --sanitizer none "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
