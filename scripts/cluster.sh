#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, for prenv's tests and demo: etcd, the
# API server, controller manager and scheduler, containerd and kubelet, a CNI bridge, kube-proxy
# and a local OCI registry. Kubernetes and etcd are built from Go modules (cached under
# ~/.cache/prenv); the rest are Debian packages.
#
#   scripts/cluster.sh build           build (once) and print the binaries' directory
#   scripts/cluster.sh up DIR          start everything under DIR; last line: the kubeconfig
#   scripts/cluster.sh registry DIR    the local registry's host:port (push here, pods pull)
#   scripts/cluster.sh down DIR        stop it all, leave nothing behind, delete DIR
#   scripts/cluster.sh status DIR      exit 0 when the cluster of DIR is up
#
# One cluster per machine: kubelet and kube-proxy own machine-wide state (iptables, cgroups).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
readonly ROOT
readonly K8S_VERSION=${PRENV_K8S_VERSION:-1.37.2}
readonly CACHE_ROOT="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/prenv"
readonly CURRENT="$CACHE_ROOT/cluster.current" # the DIR of the running cluster
readonly MARKER=.prenv-cluster
# Addresses: everything binds to loopback or to the cluster's own bridge; nothing is routed off
# the machine (no masquerading, NodePorts only on the bridge).
readonly BRIDGE=prenv0 NODE_NAME=prenv-node
readonly POD_CIDR=10.244.0.0/24 NODE_IP=10.244.0.1
readonly SERVICE_CIDR=10.96.0.0/24 API_SERVICE_IP=10.96.0.1
readonly API_PORT=6443 KUBELET_PORT=10250
# kubelet changes these at start; they are put back on down.
readonly SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops
  net.bridge.bridge-nf-call-iptables net.ipv4.ip_forward net.ipv4.conf.all.route_localnet)
readonly PACKAGES=(containerd runc containernetworking-plugins iptables conntrack ipset
  docker-registry busybox-static iproute2 openssl curl jq util-linux kmod gcc libc6-dev)
readonly COMPONENTS=(kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver
  etcd containerd registry)

PROG=cluster.sh
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

# shellcheck source=scripts/cluster/build.sh
source "$ROOT/scripts/cluster/build.sh"
# shellcheck source=scripts/cluster/config.sh
source "$ROOT/scripts/cluster/config.sh"
# shellcheck source=scripts/cluster/node.sh
source "$ROOT/scripts/cluster/node.sh"

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

ensure_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == *'install ok installed'* ]] || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}

abs_dir() { mkdir -p "$1" && (cd "$1" && pwd -P); }

check_ours() {
  [[ -f $1/$MARKER || -z $(ls -A "$1") ]] ||
    die "$1 is not empty and was not made by $PROG; refusing to use or delete it"
}

cmd_up() {
  local dir
  dir=$(abs_dir "$1")
  check_ours "$dir"
  touch "$dir/$MARKER"
  mkdir -p "$CACHE_ROOT"
  exec 8>"$CACHE_ROOT/cluster.lock"
  flock 8
  if [[ -f $CURRENT ]]; then
    local other
    other=$(cat "$CURRENT")
    if [[ $other == "$dir" ]] && healthy "$dir"; then
      log "the cluster in $dir is already up"
      printf '%s\n' "$dir/kubeconfig"
      return 0
    fi
    if [[ $other != "$dir" && -d $other ]] && healthy "$other"; then
      die "a cluster already runs in $other (one per machine): $0 down $other"
    fi
    log "cleaning up what a previous cluster in $other left behind"
    teardown "$other"
  fi
  ensure_packages
  local bindir
  bindir=$(ensure_binaries)
  printf '%s\n' "$dir" >"$CURRENT"
  local try
  for try in 1 2; do
    start_all "$dir" "$bindir" && break
    show_logs "$dir"
    teardown "$dir"
    if [[ $try -eq 2 ]]; then
      rm -f "$CURRENT"
      die "the cluster in $dir did not come up (logs above)"
    fi
    log "the cluster did not come up (logs above); trying once more"
  done
  printf '%s\n' "$dir/kubeconfig"
}

cmd_down() {
  local dir
  [[ -d $1 ]] || return 0
  dir=$(cd "$1" && pwd -P)
  check_ours "$dir"
  exec 8>"$CACHE_ROOT/cluster.lock"
  flock 8
  teardown "$dir"
  [[ -f $CURRENT && $(cat "$CURRENT") == "$dir" ]] && rm -f "$CURRENT"
  rm -rf "$dir"
}

main() {
  local cmd=${1:-}
  case $cmd in
    build) ensure_packages && ensure_binaries ;;
    up | down | status | registry)
      [[ $# -eq 2 && -n $2 ]] || die "usage: $PROG $cmd DIR"
      case $cmd in
        up) cmd_up "$2" ;;
        down) cmd_down "$2" ;;
        status) healthy "$(cd "$2" && pwd -P)" ;;
        registry) state_get "$(cd "$2" && pwd -P)" REGISTRY || die "no cluster in $2" ;;
      esac
      ;;
    *)
      sed -n '2,13s/^# \{0,1\}//p' "$0" >&2
      exit 2
      ;;
  esac
}

main "$@"
