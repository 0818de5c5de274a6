#!/usr/bin/env bash
# Every test: unit tests, the GitHub stand-in's tests, and the integration tests against a
# real Kubernetes control plane that this script starts (and stops) for the run.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

command -v cargo >/dev/null || { echo "test: cargo is needed (https://rustup.rs)" >&2; exit 1; }
command -v flock >/dev/null || { echo "test: flock (util-linux) is needed" >&2; exit 1; }

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
