# shellcheck shell=bash
# Sourced by scripts/cluster.sh: builds one Kubernetes release's server binaries and etcd from
# Go modules into the cache, once. Needs: log, die, ROOT, CACHE_ROOT, K8S_VERSION.

readonly GO_ENV=(GOMODCACHE="$CACHE_ROOT/go/mod" GOCACHE="$CACHE_ROOT/go/cache"
  GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOTOOLCHAIN=local)
readonly K8S_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
# Bump when what ends up in the cache changes (the cache is rebuilt when its stamp differs).
readonly BUILD_RECIPE=2

bin_dir() { printf '%s\n' "$CACHE_ROOT/kubernetes-$K8S_VERSION/bin"; }

have_binaries() {
  local d b
  d=$(bin_dir)
  [[ -f $d/.recipe && $(cat "$d/.recipe") == "$BUILD_RECIPE" ]] || return 1
  for b in "${K8S_COMMANDS[@]}" etcd pause; do [[ -x $d/$b ]] || return 1; done
}

# kube_module DIR: a Go module in DIR that requires k8s.io/kubernetes at K8S_VERSION. The one
# committed in scripts/kube pins the default release; another release gets its own, with every
# staging module pinned to the matching v0.Y.Z (kubernetes/kubernetes#79384).
kube_module() {
  local dir=$1 pinned
  cp "$ROOT/scripts/kube/tools.go" "$dir/"
  pinned=$(sed -n 's/^require k8s.io\/kubernetes v//p' "$ROOT/scripts/kube/go.mod")
  if [[ $pinned == "$K8S_VERSION" ]]; then
    cp "$ROOT/scripts/kube/go.mod" "$ROOT/scripts/kube/go.sum" "$dir/"
    return
  fi
  log "writing a module for Kubernetes $K8S_VERSION (scripts/kube pins $pinned)"
  local upstream staging minor=${K8S_VERSION#*.}
  upstream=$(cd "$dir" && env "${GO_ENV[@]}" go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p') || die "k8s.io/kubernetes v$K8S_VERSION not found"
  staging=$(sed -n 's/^[[:space:]]*\(k8s.io\/[a-z0-9-]*\) => .\/staging\/.*/\1/p' "$upstream")
  {
    printf 'module prenv.dev/kube\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$K8S_VERSION"
    for m in $staging; do printf '\t%s => %s v0.%s\n' "$m" "$m" "$minor"; done
    printf ')\n'
  } >"$dir/go.mod"
  (cd "$dir" && env "${GO_ENV[@]}" go mod tidy >&2) || die "go mod tidy for Kubernetes $K8S_VERSION failed"
}

build_binaries() {
  command -v go >/dev/null || die "go is needed to build Kubernetes (Go 1.26 or newer)"
  local out tmp start=$SECONDS
  out=$(bin_dir)
  mkdir -p "$CACHE_ROOT"
  tmp=$(mktemp -d "$CACHE_ROOT/build.XXXXXX")
  mkdir -p "$tmp/kube" "$tmp/bin"
  kube_module "$tmp/kube"
  log "building Kubernetes $K8S_VERSION (${K8S_COMMANDS[*]}) from Go modules; cold about 25 min on 2 cores, log $tmp/build.log"
  local pkgs=() c p ldflags='-s -w'
  for c in "${K8S_COMMANDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  # The version the binaries report (what hack/lib/version.sh stamps in Kubernetes' own build).
  local minor=${K8S_VERSION#*.}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=${K8S_VERSION%%.*}"
    ldflags+=" -X $p.gitMinor=${minor%%.*} -X $p.gitTreeState=clean"
  done
  if ! (cd "$tmp/kube" && env "${GO_ENV[@]}" go build -trimpath -ldflags="$ldflags" \
    -o "$tmp/bin/" "${pkgs[@]}" >"$tmp/build.log" 2>&1); then
    tail -n 40 "$tmp/build.log" >&2
    die "building Kubernetes $K8S_VERSION failed"
  fi
  log "building etcd (scripts/etcd)"
  if ! (cd "$ROOT/scripts/etcd" && env "${GO_ENV[@]}" go build -trimpath -ldflags='-s -w' \
    -o "$tmp/bin/etcd" . >>"$tmp/build.log" 2>&1); then
    tail -n 40 "$tmp/build.log" >&2
    die "building etcd failed"
  fi
  # The sandbox ("pause") image's binary: Kubernetes' own pause.c, static.
  local moddir
  moddir=$(cd "$tmp/kube" && env "${GO_ENV[@]}" go list -m -f '{{.Dir}}' k8s.io/kubernetes)
  gcc -Os -static -DVERSION="$K8S_VERSION" -o "$tmp/bin/pause" "$moddir/build/pause/linux/pause.c" ||
    die "compiling pause.c failed"
  printf '%s\n' "$BUILD_RECIPE" >"$tmp/bin/.recipe"
  rm -rf "$out"
  mkdir -p "$(dirname "$out")"
  mv "$tmp/bin" "$out"
  rm -rf "$tmp"
  log "built in $((SECONDS - start)) s into $out"
}

# ensure_binaries: print the directory holding every binary, building it (once, under a
# lock) when the cache lacks it. PRENV_K8S_BIN_DIR brings your own.
ensure_binaries() {
  if [[ -n ${PRENV_K8S_BIN_DIR:-} ]]; then
    printf '%s\n' "$PRENV_K8S_BIN_DIR"
    return
  fi
  if ! have_binaries; then
    mkdir -p "$CACHE_ROOT"
    exec 9>"$CACHE_ROOT/build-$K8S_VERSION.lock"
    flock 9
    have_binaries || build_binaries
    exec 9>&-
  fi
  bin_dir
}
