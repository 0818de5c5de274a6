#!/usr/bin/env bash
# A real, node-less Kubernetes control plane (etcd + kube-apiserver +
# kube-controller-manager) on loopback, for prenv's integration tests and demo.
#
#   scripts/control-plane.sh binaries     print a dir holding the three binaries
#   scripts/control-plane.sh start DIR    start a cluster under DIR, print DIR/kubeconfig
#   scripts/control-plane.sh stop DIR     stop it and delete DIR
#   scripts/control-plane.sh status DIR   exit 0 if it is healthy
#
# See --help (or scripts/README-control-plane.md) for details.
set -euo pipefail

readonly K8S_VERSION=1.20.2
readonly CACHE_ROOT="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/prenv"
readonly CACHE_DIR="$CACHE_ROOT/kubernetes-$K8S_VERSION"
readonly CACHE_BIN="$CACHE_DIR/bin"
readonly BINARIES=(etcd kube-apiserver kube-controller-manager)
readonly BUILD_PACKAGES=(etcd-server golang-go rsync jq dpkg-dev make
  golang-github-modern-go-reflect2-dev openssl curl ca-certificates)
readonly RUNTIME_PACKAGES=(openssl curl)
readonly REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
# Version of the build recipe (build_binaries), stamped into the cached bin dir
# as $RECIPE_STAMP. A cache with another (or no) stamp is rebuilt, so bump this
# whenever build_binaries changes what ends up in the binaries.
#   1 (no stamp): reflect2 1.0.2
#   2: + kube-openapi zero-value fix (empty strings in custom resources)
readonly BUILD_RECIPE=2
readonly RECIPE_STAMP=.prenv-build-recipe
readonly SRC_LIST=/etc/apt/sources.list.d/prenv-src.sources
readonly MARKER=.prenv-control-plane
readonly CONTEXT=prenv-test
readonly READY_TIMEOUT=${PRENV_CP_READY_TIMEOUT:-90}
# Ports are drawn from below the kernel's ephemeral range (32768-60999) so
# outgoing connections never hold them.
readonly PORT_MIN=10000 PORT_MAX=32000

PROG=$(basename "$0")

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

usage() {
  cat <<EOF
Usage: $PROG COMMAND [DIR]

A real (node-less) Kubernetes $K8S_VERSION control plane on 127.0.0.1:
etcd, kube-apiserver and kube-controller-manager. Pods stay Pending.

Commands:
  binaries     Make sure etcd, kube-apiserver and kube-controller-manager exist
               and print (alone on stdout) the absolute path of a directory
               holding all three. Looked up in this order:
                 1. \$PRENV_K8S_BIN_DIR (must hold all three)
                 2. all three on \$PATH
                 3. the cache $CACHE_BIN
                 4. build into that cache from Debian's 'kubernetes' source
                    package (several minutes; needs root or sudo for apt-get).
               etcd comes from Debian's etcd-server (/usr/bin/etcd).
  start DIR    Start a cluster with all state, certs, logs and pid files under
               DIR, on free loopback ports, detached from the caller. Waits until
               it is ready (at most ${READY_TIMEOUT}s, PRENV_CP_READY_TIMEOUT), writes
               DIR/kubeconfig (context '$CONTEXT', static bearer token in group
               system:masters, own CA) and prints its absolute path as the last
               line on stdout. If DIR already holds a healthy cluster it only
               prints the path.
  stop DIR     Stop the processes of DIR (TERM, then KILL) and delete DIR.
               No error if nothing runs.
  status DIR   Exit 0 if the cluster of DIR is healthy, else non-zero.
  -h, --help   This text.

Files under DIR: kubeconfig, pki/ (ca.crt, apiserver.crt, sa.key, ...),
tokens.csv, token, state.env (ports), etcd/ (data), *.log, *.pid.
EOF
}

# ----------------------------------------------------------------- helpers

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

APT_UPDATED=0
apt_update() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 ||
      die "apt-get update failed"
    APT_UPDATED=1
  fi
}

# ensure_packages PKG...: install the Debian packages that are missing.
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  command -v apt-get >/dev/null 2>&1 ||
    die "missing packages (${missing[*]}) and no apt-get to install them"
  apt_update
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >&2 ||
    die "apt-get install ${missing[*]} failed"
}

# ensure_tools: openssl and curl are needed to start a cluster.
ensure_tools() {
  if ! command -v openssl >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
    ensure_packages "${RUNTIME_PACKAGES[@]}"
  fi
}

have_all() { # have_all DIR: DIR holds all three binaries, executable
  local d=$1 b
  for b in "${BINARIES[@]}"; do
    [[ -x "$d/$b" && -f "$d/$b" ]] || return 1
  done
}

abs_path() { # absolute path without requiring existence of the last part
  local p=$1
  [[ $p == /* ]] || p="$PWD/$p"
  if [[ -d $p ]]; then
    (cd "$p" && pwd -P)
  else
    local parent
    parent=$(dirname "$p")
    mkdir -p "$parent"
    printf '%s/%s\n' "$(cd "$parent" && pwd -P)" "$(basename "$p")"
  fi
}

# ---------------------------------------------------------------- binaries

# ensure_etcd: print the path of an etcd binary, installing etcd-server if needed.
ensure_etcd() {
  local e
  if e=$(command -v etcd 2>/dev/null) && [[ -x $e ]]; then
    printf '%s\n' "$e"
    return
  fi
  if [[ ! -x /usr/bin/etcd ]]; then
    ensure_packages etcd-server
  fi
  [[ -x /usr/bin/etcd ]] || die "etcd-server is installed but /usr/bin/etcd is missing"
  printf '%s\n' /usr/bin/etcd
}

# deb-src for bookworm main, derived from the existing 'deb' entry.
ensure_deb_src() {
  if [[ -f $SRC_LIST ]]; then
    return 0
  fi
  local uris="http://deb.debian.org/debian"
  local signed="/usr/share/keyrings/debian-archive-keyring.gpg"
  local f=/etc/apt/sources.list.d/debian.sources
  if [[ -f $f ]]; then
    # First deb822 stanza whose Suites include plain "bookworm".
    local stanza
    stanza=$(awk 'BEGIN{RS=""} /(^|\n)Suites:[^\n]*(^|[ \t])bookworm([ \t]|\n|$)/ {print; exit}' "$f")
    local u s
    u=$(printf '%s\n' "$stanza" | sed -n 's/^URIs:[[:space:]]*//p' | head -n1)
    s=$(printf '%s\n' "$stanza" | sed -n 's/^Signed-By:[[:space:]]*//p' | head -n1)
    [[ -n $u ]] && uris=$u
    [[ -n $s && -f $s ]] && signed=$s
  elif [[ -f /etc/apt/sources.list ]]; then
    local u
    u=$(awk '$1=="deb" && $0 ~ / bookworm / {for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
      /etc/apt/sources.list)
    [[ -n $u ]] && uris=$u
  fi
  log "adding deb-src entry for bookworm main ($SRC_LIST)"
  printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: %s\n' \
    "$uris" "$signed" | as_root tee "$SRC_LIST" >/dev/null
  APT_UPDATED=0
}

build_binaries() {
  [[ $(uname -s) == Linux ]] || die "building Kubernetes here needs Linux (Debian bookworm)"
  command -v apt-get >/dev/null 2>&1 ||
    die "no kube-apiserver found and no apt-get to build one; set PRENV_K8S_BIN_DIR"
  log "no usable Kubernetes binaries found: building $K8S_VERSION from Debian's source package into $CACHE_DIR"
  log "(this takes about 5-10 minutes on 2 cores; later runs use the cache)"
  ensure_packages "${BUILD_PACKAGES[@]}"
  [[ -d $REFLECT2_SRC ]] || die "$REFLECT2_SRC missing (golang-github-modern-go-reflect2-dev)"
  ensure_deb_src
  apt_update

  mkdir -p "$CACHE_DIR"
  # Leftovers of an interrupted build (we hold the build lock).
  chmod -R u+w "$CACHE_DIR"/build.* 2>/dev/null || true
  rm -rf "$CACHE_DIR"/build.* "$CACHE_DIR"/bin.new.*
  local tmp
  tmp=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "chmod -R u+w '$tmp' 2>/dev/null; rm -rf '$tmp'" EXIT
  chmod 755 "$tmp" # lets apt's _apt user write the download

  log "downloading the 'kubernetes' source package"
  (cd "$tmp" && apt-get -o APT::Sandbox::User=root source --download-only kubernetes >&2) ||
    die "apt-get source --download-only kubernetes failed (is deb-src for bookworm in $SRC_LIST reachable?)"
  local dsc
  dsc=$(find "$tmp" -maxdepth 1 -name 'kubernetes_*.dsc' | head -n1)
  [[ -n $dsc ]] || die "no kubernetes .dsc downloaded"
  case $(basename "$dsc") in
    *"$K8S_VERSION"*) ;;
    *) die "unexpected source version $(basename "$dsc") (want $K8S_VERSION; is this bookworm?)" ;;
  esac
  log "unpacking $(basename "$dsc")"
  (cd "$tmp" && dpkg-source --no-check -x "$dsc" src >&2) || die "dpkg-source -x failed"

  local tree="$tmp/src"
  log "replacing vendored github.com/modern-go/reflect2 with $REFLECT2_SRC"
  rm -rf "$tree/vendor/github.com/modern-go/reflect2"
  mkdir -p "$tree/vendor/github.com/modern-go/reflect2"
  find "$REFLECT2_SRC" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' -o -name LICENSE \) \
    ! -name '*_test.go' -exec cp {} "$tree/vendor/github.com/modern-go/reflect2/" \;

  # Empty strings in custom resources. kube-openapi's type validator treats
  # data as null if reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)),
  # reflect.ValueOf(data)): that compares the reflect.Value internals (type,
  # pointer, flags), which never matched with Go <= 1.15 (Zero allocated). Since
  # Go 1.16 reflect.Zero points at the runtime's shared zero buffer, and so does
  # an interface holding "", so "" fails 'type: string' as "null". Upstream
  # fix (kube-openapi#230, Kubernetes 1.21): test only data == nil.
  local tv="$tree/vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go"
  local zero_check='reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data))'
  log "patching the zero-value check in ${tv#"$tree"/}"
  [[ -f $tv ]] || die "$tv missing in the source package"
  sed -i 's/^\([[:space:]]*\)if data == nil || reflect\.DeepEqual(reflect\.Zero(reflect\.TypeOf(data)), reflect\.ValueOf(data)) {$/\1if data == nil {/' "$tv"
  if grep -qF "$zero_check" "$tv"; then
    die "could not patch the zero-value check in $tv"
  fi

  mkdir -p "$tmp/gopath/src/k8s.io" "$tmp/home" "$tmp/gocache"
  ln -s "$tree" "$tmp/gopath/src/k8s.io/kubernetes"

  local go_bin=/usr/lib/go/bin
  log "compiling kube-apiserver and kube-controller-manager (log: $tmp/build.log)"
  local start=$SECONDS
  if ! (cd "$tmp/gopath/src/k8s.io/kubernetes" &&
    env PATH="$go_bin:$PATH" HOME="$tmp/home" GOPATH="$tmp/gopath" \
      GOCACHE="$tmp/gocache" GOFLAGS=-mod=vendor CGO_ENABLED=0 \
      make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" \
      >"$tmp/build.log" 2>&1); then
    tail -n 60 "$tmp/build.log" >&2
    die "Kubernetes build failed (see output above)"
  fi
  log "compiled in $((SECONDS - start)) s"

  local out="$tree/_output/bin" b
  for b in kube-apiserver kube-controller-manager; do
    [[ -x $out/$b ]] || die "build produced no $out/$b"
  done
  local etcd newbin
  etcd=$(ensure_etcd)
  newbin=$(mktemp -d "$CACHE_DIR/bin.new.XXXXXX")
  cp "$out/kube-apiserver" "$out/kube-controller-manager" "$newbin/"
  ln -s "$etcd" "$newbin/etcd"
  printf '%s\n' "$BUILD_RECIPE" >"$newbin/$RECIPE_STAMP"
  chmod 755 "$newbin"
  rm -rf "$CACHE_BIN"
  mv "$newbin" "$CACHE_BIN"
  log "cleaning up the build tree"
  chmod -R u+w "$tmp" 2>/dev/null || true # Go's module cache is read-only
  rm -rf "$tmp"
  trap - EXIT
  log "binaries cached in $CACHE_BIN"
}

# cache_current: the cached bin dir was built with this BUILD_RECIPE.
cache_current() {
  [[ -f $CACHE_BIN/$RECIPE_STAMP && $(head -n1 "$CACHE_BIN/$RECIPE_STAMP") == "$BUILD_RECIPE" ]]
}

# resolve_binaries: print the directory; builds if needed.
resolve_binaries() {
  if [[ -n ${PRENV_K8S_BIN_DIR:-} ]]; then
    have_all "$PRENV_K8S_BIN_DIR" ||
      die "PRENV_K8S_BIN_DIR=$PRENV_K8S_BIN_DIR must hold executable ${BINARIES[*]}"
    abs_path "$PRENV_K8S_BIN_DIR"
    return
  fi

  local b p paths=() same=1
  for b in "${BINARIES[@]}"; do
    if p=$(command -v "$b" 2>/dev/null) && [[ -x $p && $p == /* ]]; then
      paths+=("$p")
    fi
  done
  if [[ ${#paths[@]} -eq ${#BINARIES[@]} ]]; then
    local d0
    d0=$(dirname "${paths[0]}")
    for p in "${paths[@]}"; do [[ $(dirname "$p") == "$d0" ]] || same=0; done
    if [[ $same -eq 1 ]]; then
      abs_path "$d0"
    else
      # Different directories: gather symlinks in one.
      local links="$CACHE_ROOT/path-bin"
      mkdir -p "$links"
      for p in "${paths[@]}"; do ln -sfn "$p" "$links/$(basename "$p")"; done
      abs_path "$links"
    fi
    return
  fi

  if cache_current && have_all "$CACHE_BIN"; then
    abs_path "$CACHE_BIN"
    return
  fi

  mkdir -p "$CACHE_ROOT"
  local lock="$CACHE_ROOT/kubernetes-$K8S_VERSION.lock"
  exec 9>"$lock"
  if ! flock -n 9; then
    log "another process is building Kubernetes; waiting for it ($lock)"
    flock 9
  fi
  if ! cache_current; then
    if [[ -e $CACHE_BIN ]]; then
      log "cached binaries in $CACHE_BIN are not from build recipe $BUILD_RECIPE; rebuilding"
    fi
    build_binaries
  elif ! have_all "$CACHE_BIN"; then
    if [[ -x $CACHE_BIN/kube-apiserver && -x $CACHE_BIN/kube-controller-manager ]]; then
      # Cached build but etcd went missing (dangling symlink): only relink.
      local etcd
      etcd=$(ensure_etcd)
      ln -sfn "$etcd" "$CACHE_BIN/etcd"
    else
      build_binaries
    fi
  fi
  exec 9>&-
  if ! { cache_current && have_all "$CACHE_BIN"; }; then
    die "binaries missing in $CACHE_BIN after build"
  fi
  abs_path "$CACHE_BIN"
}

# ------------------------------------------------------------------ cluster

state_get() { # state_get DIR KEY
  local f="$1/state.env"
  [[ -f $f ]] || return 1
  sed -n "s/^$2=//p" "$f" | head -n1
}

pid_of() { # pid_of DIR NAME: print the pid if that process runs for DIR
  local dir=$1 name=$2 pid
  [[ -f $dir/$name.pid ]] || return 1
  pid=$(tr -dc '0-9' <"$dir/$name.pid")
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  { tr '\0' '\n' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$dir/" || return 1
  printf '%s\n' "$pid"
}

# pids_for DIR: every etcd/kube-apiserver/kube-controller-manager process whose
# command line names DIR (covers lost pid files).
pids_for() {
  local dir=$1 f pid exe
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    exe=$({ tr '\0' '\n' <"$f"; } 2>/dev/null | head -n1) || continue
    case $(basename "$exe" 2>/dev/null) in
      etcd | kube-apiserver | kube-controller-manager) ;;
      *) continue ;;
    esac
    if { tr '\0' '\n' <"$f"; } 2>/dev/null | grep -qF "$dir/"; then
      printf '%s\n' "$pid"
    fi
  done
}

port_in_use() { # port_in_use PORT: any TCP socket bound to it
  local hex
  hex=$(printf '%04X' "$1")
  awk -v h="$hex" 'FNR > 1 { n = split($2, a, ":"); if (a[n] == h) { found = 1; exit } }
    END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

PICKED=""
pick_port() { # sets REPLY to a free port not already picked by us
  local i p
  for i in $(seq 1 200); do
    p=$((PORT_MIN + (RANDOM * 32768 + RANDOM) % (PORT_MAX - PORT_MIN)))
    [[ " $PICKED " == *" $p "* ]] && continue
    port_in_use "$p" && continue
    PICKED+=" $p"
    REPLY=$p
    return 0
  done
  die "no free loopback port found in $PORT_MIN-$PORT_MAX"
}

wait_listening() { # wait_listening PORT SECONDS PIDNAME DIR
  local port=$1 secs=$2 name=$3 dir=$4 i
  for ((i = 0; i < secs * 5; i++)); do
    port_in_use "$port" && return 0
    pid_of "$dir" "$name" >/dev/null || return 1
    sleep 0.2
  done
  return 1
}

launch() { # launch DIR NAME BINARY ARGS...: detached, pid in DIR/NAME.pid
  local dir=$1 name=$2
  shift 2
  # The child writes its own pid, closes every inherited descriptor but 0-2
  # (our lock files, the caller's pipes), then execs: the pid file holds the
  # daemon's pid.
  # shellcheck disable=SC2016 # expanded by the child shell
  setsid bash -c '
    echo $$ >"$0"
    for f in /proc/$$/fd/*; do
      n=${f##*/}
      case $n in 0 | 1 | 2) ;; *) eval "exec $n>&-" 2>/dev/null || true ;; esac
    done
    exec "$@"' "$dir/$name.pid" "$@" </dev/null >>"$dir/$name.log" 2>&1 &
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s $dir/$name.pid ]] && return 0
    sleep 0.1
  done
  die "could not launch $name"
}

curl_api() { # curl_api DIR PATH: print the HTTP status code
  local dir=$1 path=$2 port token
  port=$(state_get "$dir" APISERVER_PORT) || return 1
  token=$(cat "$dir/token" 2>/dev/null) || return 1
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
    --cacert "$dir/pki/ca.crt" -H "Authorization: Bearer $token" \
    "https://127.0.0.1:$port$path" 2>/dev/null || true
}

curl_body() { # curl_body DIR PATH: print the response body
  local dir=$1 path=$2 port token
  port=$(state_get "$dir" APISERVER_PORT) || return 1
  token=$(cat "$dir/token" 2>/dev/null) || return 1
  curl -s --max-time 5 --cacert "$dir/pki/ca.crt" -H "Authorization: Bearer $token" \
    "https://127.0.0.1:$port$path" 2>/dev/null || true
}

healthy() { # healthy DIR
  local dir=$1 n
  [[ -f $dir/$MARKER && -f $dir/kubeconfig ]] || return 1
  for n in "${BINARIES[@]}"; do pid_of "$dir" "$n" >/dev/null || return 1; done
  [[ $(curl_api "$dir" /readyz) == 200 ]]
}

show_logs() {
  local dir=$1 n
  for n in "${BINARIES[@]}"; do
    if [[ -f $dir/$n.log ]]; then
      printf '\n===== last lines of %s =====\n' "$dir/$n.log" >&2
      tail -n 25 "$dir/$n.log" >&2
    fi
  done
}

make_pki() {
  local pki=$1
  mkdir -p "$pki"
  chmod 700 "$pki"
  (
    cd "$pki"
    openssl genrsa -out ca.key 2048 2>/dev/null
    openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=prenv-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -addext "subjectKeyIdentifier=hash" \
      -out ca.crt 2>/dev/null
    openssl genrsa -out apiserver.key 2048 2>/dev/null
    openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -out apiserver.csr 2>/dev/null
    cat >apiserver.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1
EOF
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -sha256 -days 3650 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    openssl verify -CAfile ca.crt apiserver.crt >/dev/null
  ) || die "certificate generation with openssl failed"
}

write_kubeconfig() { # write_kubeconfig FILE PORT CA TOKEN
  local file=$1 port=$2 ca=$3 token=$4 cadata
  cadata=$(base64 -w0 <"$ca")
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $CONTEXT
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $cadata
users:
- name: prenv-admin
  user:
    token: $token
contexts:
- name: $CONTEXT
  context:
    cluster: $CONTEXT
    user: prenv-admin
    namespace: default
current-context: $CONTEXT
EOF
  chmod 600 "$file.tmp"
  mv "$file.tmp" "$file"
}

is_alive() { # is_alive PID: running and not a zombie (an unreaped orphan)
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$({ cat "/proc/$1/stat"; } 2>/dev/null) || return 1
  state=${state##*) }
  [[ ${state%% *} != Z ]]
}

term_wait_kill() { # term_wait_kill TENTHS PID...: TERM, wait, then KILL
  local tenths=$1 p i alive
  shift
  [[ $# -eq 0 ]] && return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < tenths; i++)); do
    alive=0
    for p in "$@"; do is_alive "$p" && alive=1; done
    [[ $alive -eq 0 ]] && return 0
    sleep 0.1
  done
  log "killing pids $* (did not stop on TERM)"
  kill -KILL "$@" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive=0
    for p in "$@"; do is_alive "$p" && alive=1; done
    [[ $alive -eq 0 ]] && return 0
    sleep 0.1
  done
}

# kill_dir DIR: stop every process of DIR, clients first: kube-apiserver
# hangs ~20 s in its graceful shutdown if etcd goes away first.
kill_dir() {
  local dir=$1 n p all=() rest=()
  for n in kube-controller-manager kube-apiserver etcd; do
    p=$(pid_of "$dir" "$n") && all+=("$p")
  done
  while read -r p; do
    [[ -n $p && " ${all[*]} " != *" $p "* ]] && all+=("$p") && rest+=("$p")
  done < <(pids_for "$dir")
  [[ ${#all[@]} -eq 0 ]] && return 0
  log "stopping pids ${all[*]} ($dir)"
  if p=$(pid_of "$dir" kube-controller-manager); then term_wait_kill 100 "$p"; fi
  if p=$(pid_of "$dir" kube-apiserver); then term_wait_kill 150 "$p"; fi
  if p=$(pid_of "$dir" etcd); then rest+=("$p"); fi
  term_wait_kill 100 "${rest[@]}"
}

# check_ours DIR: refuse to wipe a directory we did not create.
check_ours() {
  local dir=$1
  [[ -d $dir ]] || return 0
  [[ -f $dir/$MARKER ]] && return 0
  [[ -z $(ls -A "$dir") ]] && return 0
  die "$dir exists, is not empty and was not made by $PROG; refusing to use or delete it"
}

cmd_start() {
  local dir
  dir=$(abs_path "$1")
  [[ $dir != / ]] || die "refusing to use / as DIR"
  mkdir -p "$dir"
  check_ours "$dir"
  touch "$dir/$MARKER"

  # One start at a time per DIR.
  exec 8>"$dir/.start.lock"
  flock 8

  if healthy "$dir"; then
    log "cluster in $dir is already running"
    printf '%s\n' "$dir/kubeconfig"
    return 0
  fi

  local bindir
  bindir=$(resolve_binaries)
  ensure_tools

  # Stale or half-started: clean up and start afresh.
  kill_dir "$dir"
  find "$dir" -mindepth 1 -maxdepth 1 ! -name "$MARKER" ! -name .start.lock -exec rm -rf {} +

  log "creating certificates and tokens in $dir"
  make_pki "$dir/pki"
  local token
  token=$(openssl rand -hex 32)
  printf '%s\n' "$token" >"$dir/token"
  printf '%s,prenv-admin,prenv-admin,"system:masters"\n' "$token" >"$dir/tokens.csv"
  chmod 600 "$dir/token" "$dir/tokens.csv"

  local etcd_env=()
  case $(uname -m) in
    x86_64 | aarch64) ;;
    *) etcd_env=(env "ETCD_UNSUPPORTED_ARCH=$(dpkg --print-architecture 2>/dev/null || uname -m)") ;;
  esac
  local etcd_extra=()
  if "$bindir/etcd" --help 2>&1 | grep -q -- '--unsafe-no-fsync'; then
    etcd_extra+=(--unsafe-no-fsync) # throw-away test data: skip fsync
  fi

  # Port choice and binding happen under a machine-wide lock so that parallel
  # starts do not pick the same free port.
  local plock="${TMPDIR:-/tmp}/prenv-control-plane-ports.lock"
  exec 7>>"$plock"
  chmod 666 "$plock" 2>/dev/null || true
  flock 7

  local attempt ok=0 etcd_client etcd_peer api_port
  for attempt in 1 2 3; do
    PICKED=""
    pick_port
    etcd_client=$REPLY
    pick_port
    etcd_peer=$REPLY
    pick_port
    api_port=$REPLY
    printf 'ETCD_CLIENT_PORT=%s\nETCD_PEER_PORT=%s\nAPISERVER_PORT=%s\n' \
      "$etcd_client" "$etcd_peer" "$api_port" >"$dir/state.env"

    log "starting etcd on 127.0.0.1:$etcd_client (peer $etcd_peer)"
    rm -rf "$dir/etcd"
    launch "$dir" etcd "${etcd_env[@]}" "$bindir/etcd" \
      --name prenv \
      --data-dir "$dir/etcd" \
      --listen-client-urls "http://127.0.0.1:$etcd_client" \
      --advertise-client-urls "http://127.0.0.1:$etcd_client" \
      --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
      --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
      --initial-cluster "prenv=http://127.0.0.1:$etcd_peer" \
      --initial-cluster-state new \
      "${etcd_extra[@]}"
    if ! wait_listening "$etcd_client" 20 etcd "$dir"; then
      log "etcd did not come up (attempt $attempt)"
      tail -n 5 "$dir/etcd.log" >&2 || true
      kill_dir "$dir"
      continue
    fi

    log "starting kube-apiserver on https://127.0.0.1:$api_port"
    launch "$dir" kube-apiserver "$bindir/kube-apiserver" \
      --etcd-servers "http://127.0.0.1:$etcd_client" \
      --bind-address 127.0.0.1 \
      --advertise-address 127.0.0.1 \
      --secure-port "$api_port" \
      --insecure-port 0 \
      --cert-dir "$dir/pki" \
      --tls-cert-file "$dir/pki/apiserver.crt" \
      --tls-private-key-file "$dir/pki/apiserver.key" \
      --client-ca-file "$dir/pki/ca.crt" \
      --token-auth-file "$dir/tokens.csv" \
      --authorization-mode RBAC \
      --service-account-key-file "$dir/pki/sa.pub" \
      --service-account-signing-key-file "$dir/pki/sa.key" \
      --service-account-issuer https://kubernetes.default.svc \
      --service-cluster-ip-range 10.0.0.0/24 \
      --allow-privileged=true \
      --enable-admission-plugins NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,ResourceQuota \
      --profiling=false
    if ! wait_listening "$api_port" 60 kube-apiserver "$dir"; then
      log "kube-apiserver did not listen (attempt $attempt)"
      tail -n 5 "$dir/kube-apiserver.log" >&2 || true
      kill_dir "$dir"
      continue
    fi
    ok=1
    break
  done
  flock -u 7
  exec 7>&-
  if [[ $ok -ne 1 ]]; then
    show_logs "$dir"
    die "could not start etcd/kube-apiserver in $dir"
  fi

  write_kubeconfig "$dir/kubeconfig" "$api_port" "$dir/pki/ca.crt" "$token"

  log "starting kube-controller-manager"
  launch "$dir" kube-controller-manager "$bindir/kube-controller-manager" \
    --kubeconfig "$dir/kubeconfig" \
    --controllers namespace,garbagecollector,serviceaccount,serviceaccount-token,deployment,replicaset,resourcequota,clusterrole-aggregation \
    --leader-elect=false \
    --service-account-private-key-file "$dir/pki/sa.key" \
    --root-ca-file "$dir/pki/ca.crt" \
    --use-service-account-credentials=false \
    --secure-port 0 \
    --port 0 \
    --profiling=false

  log "waiting for the control plane to be ready (max ${READY_TIMEOUT}s)"
  local deadline=$((SECONDS + READY_TIMEOUT)) stage=readyz n
  while :; do
    for n in "${BINARIES[@]}"; do
      if ! pid_of "$dir" "$n" >/dev/null; then
        show_logs "$dir"
        kill_dir "$dir"
        die "$n exited during start-up (logs above, in $dir)"
      fi
    done
    case $stage in
      readyz) [[ $(curl_api "$dir" /readyz) == 200 ]] && stage=ns ;;
      ns) [[ $(curl_api "$dir" /api/v1/namespaces/default) == 200 ]] && stage=sa ;;
      sa) [[ $(curl_api "$dir" /api/v1/namespaces/default/serviceaccounts/default) == 200 ]] && stage=roles ;;
      # The aggregated ClusterRoles (edit, admin, view) are filled by a controller.
      roles) curl_body "$dir" /apis/rbac.authorization.k8s.io/v1/clusterroles/edit | grep -q '"verbs"' && break ;;
    esac
    if ((SECONDS >= deadline)); then
      show_logs "$dir"
      kill_dir "$dir"
      die "control plane in $dir not ready after ${READY_TIMEOUT}s (stuck at: $stage)"
    fi
    sleep 0.3
  done
  flock -u 8
  exec 8>&-
  log "ready: https://127.0.0.1:$api_port (kubeconfig $dir/kubeconfig)"
  printf '%s\n' "$dir/kubeconfig"
}

cmd_stop() {
  local dir
  dir=$(abs_path "$1")
  [[ $dir != / ]] || die "refusing to use / as DIR"
  if [[ ! -e $dir ]]; then
    # Nothing to delete; still stop any stray process naming it.
    kill_dir "$dir"
    return 0
  fi
  check_ours "$dir"
  kill_dir "$dir"
  rm -rf "$dir"
}

cmd_status() {
  local dir
  dir=$(abs_path "$1")
  healthy "$dir"
}

main() {
  local cmd=${1:-}
  case $cmd in
    -h | --help | help)
      usage
      ;;
    binaries)
      [[ $# -eq 1 ]] || die "usage: $PROG binaries"
      resolve_binaries
      ;;
    start | stop | status)
      [[ $# -eq 2 && -n $2 ]] || die "usage: $PROG $cmd DIR"
      "cmd_$cmd" "$2"
      ;;
    '')
      usage >&2
      exit 2
      ;;
    *)
      usage >&2
      die "unknown command: $cmd"
      ;;
  esac
}

main "$@"
