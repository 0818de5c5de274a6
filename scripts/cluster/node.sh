# shellcheck shell=bash
# Sourced by scripts/cluster.sh: starting, checking and tearing down the components. Needs:
# ROOT, log, die and the address constants of scripts/cluster.sh.
# shellcheck disable=SC2153 # ROOT and the constants come from scripts/cluster.sh

state_get() { sed -n "s/^$2=//p" "$1/state.env" 2>/dev/null | grep . | head -n1; }

pid_of() { # pid_of DIR NAME: the pid if that component of DIR still runs
  local pid
  pid=$(cat "$1/$2.pid" 2>/dev/null) || return 1
  [[ -n $pid && -d /proc/$pid ]] || return 1
  # (No `| grep -q` here: with pipefail, grep quitting early fails the pipeline at random.)
  local cmdline
  cmdline=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null) || return 1
  [[ $cmdline == *"$1"* ]] || return 1
  printf '%s\n' "$pid"
}

launch() { # launch DIR NAME COMMAND...: detached, own session, pid in DIR/NAME.pid
  local dir=$1 name=$2
  shift 2
  setsid "$@" </dev/null >>"$dir/$name.log" 2>&1 8>&- 9>&- &
  printf '%s\n' "$!" >"$dir/$name.pid"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { # a free loopback port below the ephemeral range
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 12000))
    port_free "$p" && printf '%s\n' "$p" && return
  done
  die "no free port"
}

api() { # api DIR PATH: GET as the admin, body on stdout
  local token
  token=$(sed -n 's/^    token: //p' "$1/kubeconfig")
  curl -fsS --max-time 5 --cacert "$1/pki/ca.crt" -H "Authorization: Bearer $token" \
    "https://$NODE_IP:$API_PORT$2" 2>/dev/null
}

untainted() { # untainted DIR: the node carries no taint (it was read, and has none)
  api "$1" "/api/v1/nodes/$NODE_NAME" | jq -e '(.spec.taints // []) | length == 0' >/dev/null
}

healthy() { # healthy DIR: every component runs and the node is Ready
  local dir=$1 c
  [[ -f $dir/state.env ]] || return 1
  for c in "${COMPONENTS[@]}"; do pid_of "$dir" "$c" >/dev/null || return 1; done
  api "$dir" "/api/v1/nodes/$NODE_NAME" | jq -e \
    '.status.conditions[] | select(.type == "Ready") | .status == "True"' >/dev/null 2>&1
}

wait_until() { # wait_until SECONDS WHAT DIR COMMAND...
  local secs=$1 what=$2 dir=$3 c
  shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    for c in "${COMPONENTS[@]}"; do
      if [[ -f $dir/$c.pid ]] && ! pid_of "$dir" "$c" >/dev/null; then
        log "$c exited while waiting for $what"
        return 1
      fi
    done
    ((SECONDS < deadline)) || {
      log "timed out after ${secs}s waiting for $what"
      return 1
    }
    sleep 0.5
  done
}

show_logs() {
  local f
  for f in "$1"/*.log; do
    [[ -f $f ]] || continue
    printf '\n===== %s (last lines) =====\n' "$f" >&2
    tail -n 15 "$f" >&2
  done
}

save_sysctls() {
  local s
  for s in "${SYSCTLS[@]}"; do
    printf '%s=%s\n' "$s" "$(sysctl -n "$s" 2>/dev/null)"
  done >"$1/sysctls.saved"
}

restore_sysctls() {
  local line
  [[ -f $1/sysctls.saved ]] || return 0
  while IFS= read -r line; do
    [[ $line == *=?* ]] && sysctl -q -w "$line" >/dev/null 2>&1
  done <"$1/sysctls.saved"
  true
}

readonly FENCE_RULE=(FORWARD -i "$BRIDGE" ! -o "$BRIDGE" -m comment --comment prenv-cluster -j DROP)

make_bridge() {
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr replace "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Service addresses are the bridge's too: before kube-proxy has a Service's rules (or for
  # an address no Service has), a connection from this host must not go to the machine's
  # default route.
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
  # Whatever a pod sends is never forwarded off the bridge (to the machine's network).
  iptables -C "${FENCE_RULE[@]}" 2>/dev/null || iptables -I "${FENCE_RULE[@]}"
}

push_pause() { # push_pause BINDIR REGISTRY
  python3 "$ROOT/scripts/oci-image.py" "$2/pause:$K8S_VERSION" \
    --file "$1/pause:/pause:0755" --entrypoint /pause --user 65535:65535 >/dev/null
}

start_all() { # start_all DIR BINDIR
  local dir=$1 bin=$2 start=$SECONDS
  find "$dir" -mindepth 1 -maxdepth 1 ! -name "$MARKER" -exec rm -rf {} +
  save_sysctls "$dir"
  make_pki "$dir/pki"
  local etcd_port etcd_peer registry_port
  etcd_port=$(free_port)
  etcd_peer=$(free_port)
  registry_port=$(free_port)
  local registry="127.0.0.1:$registry_port"
  printf 'REGISTRY=%s\nETCD=127.0.0.1:%s\nAPI=https://%s:%s\n' "$registry" "$etcd_port" \
    "$NODE_IP" "$API_PORT" >"$dir/state.env"
  make_tokens "$dir"
  write_containerd_config "$dir" "$registry"
  write_kubelet_config "$dir"
  write_proxy_config "$dir" "$(free_port)" "$(free_port)"
  write_registry_config "$dir" "$registry_port"
  make_bridge
  # Service traffic between pods on the bridge must pass iptables (kube-proxy's DNAT).
  modprobe br_netfilter 2>/dev/null || true
  sysctl -q -w net.bridge.bridge-nf-call-iptables=1

  log "starting the registry ($registry), etcd and the API server"
  launch "$dir" registry docker-registry serve "$dir/registry.yaml"
  launch "$dir" etcd "$bin/etcd" --name prenv --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "prenv=http://127.0.0.1:$etcd_peer" \
    --listen-metrics-urls "" --unsafe-no-fsync --log-level warn
  launch "$dir" kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$API_PORT" \
    --cert-dir "$dir/pki" --tls-cert-file "$dir/pki/apiserver.crt" \
    --tls-private-key-file "$dir/pki/apiserver.key" --client-ca-file "$dir/pki/ca.crt" \
    --token-auth-file "$dir/tokens.csv" --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --service-account-key-file "$dir/pki/sa.pub" \
    --service-account-signing-key-file "$dir/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range "$SERVICE_CIDR" --allow-privileged=true \
    --kubelet-client-certificate "$dir/pki/kubelet-client.crt" \
    --kubelet-client-key "$dir/pki/kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP --profiling=false
  wait_until 60 "the registry" "$dir" curl -fsS "http://$registry/v2/" || return 1
  push_pause "$bin" "$registry" || return 1
  log "starting containerd"
  launch "$dir" containerd containerd --config "$dir/containerd/config.toml"
  wait_until 90 "the API server" "$dir" api "$dir" /readyz || return 1
  log "starting the controller manager, the scheduler, kubelet and kube-proxy"
  launch "$dir" kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$dir/kubeconfig" --leader-elect=false --bind-address 127.0.0.1 \
    --secure-port 0 --service-account-private-key-file "$dir/pki/sa.key" \
    --root-ca-file "$dir/pki/ca.crt" --use-service-account-credentials \
    --cluster-signing-cert-file "$dir/pki/ca.crt" --cluster-signing-key-file "$dir/pki/ca.key" \
    --profiling=false
  launch "$dir" kube-scheduler "$bin/kube-scheduler" --kubeconfig "$dir/kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 --profiling=false
  wait_until 30 "containerd" "$dir" test -S "$dir/containerd.sock" || return 1
  launch "$dir" kubelet "$bin/kubelet" --config "$dir/kubelet.yaml" \
    --kubeconfig "$dir/kubelet.kubeconfig" --root-dir "$dir/kubelet" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP"
  launch "$dir" kube-proxy "$bin/kube-proxy" --config "$dir/kube-proxy.yaml"
  wait_until 120 "the node to be Ready" "$dir" healthy "$dir" || return 1
  # The not-ready taint goes once the node lifecycle controller has seen the node Ready, and
  # pods need their namespace's ServiceAccount.
  wait_until 60 "the node to be schedulable" "$dir" untainted "$dir" || return 1
  wait_until 60 "the default ServiceAccount" "$dir" \
    api "$dir" /api/v1/namespaces/default/serviceaccounts/default || return 1
  log "up in $((SECONDS - start)) s: Kubernetes $K8S_VERSION, node $NODE_NAME ($NODE_IP), registry $registry"
}

# Everything below undoes what start_all and kubelet did, in an order that lets each step
# succeed: pods first, then the node, then the control plane, then the machine's state.
stop_pid() { # stop_pid SECONDS PID...: TERM, wait, KILL
  local secs=$1 p
  shift
  [[ $# -gt 0 ]] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for _ in $(seq $((secs * 10))); do
    for p in "$@"; do [[ -d /proc/$p ]] && kill -0 "$p" 2>/dev/null && continue 2; done
    return 0
  done
  kill -KILL "$@" 2>/dev/null || true
  sleep 0.2
}

stop_component() { # stop_component DIR NAME SECONDS
  local pid
  pid=$(pid_of "$1" "$2") && stop_pid "$3" "$pid"
  rm -f "$1/$2.pid"
}

shims_of() { # the runc shims of DIR's containerd (they outlive it)
  local f
  for f in /proc/[0-9]*/cmdline; do
    [[ $({ tr '\0' ' ' <"$f"; } 2>/dev/null) == *containerd-shim*" -address $1/containerd.sock"* ]] &&
      basename "$(dirname "$f")"
  done
  true
}

teardown() { # teardown DIR
  local dir=$1 m
  [[ -d $dir ]] || return 0
  log "tearing down the cluster in $dir"
  stop_component "$dir" kubelet 10
  if [[ -S $dir/containerd.sock ]] && pid_of "$dir" containerd >/dev/null; then
    local ctr=(ctr --address "$dir/containerd.sock" -n k8s.io) id
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
      "${ctr[@]}" tasks kill -s KILL "$id" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
      "${ctr[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true
    done
  fi
  # shellcheck disable=SC2046 # one pid per word
  stop_pid 5 $(shims_of "$dir")
  if [[ -x $(bin_dir)/kube-proxy ]] && pid_of "$dir" kube-proxy >/dev/null; then
    stop_component "$dir" kube-proxy 5
    "$(bin_dir)/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  for c in kube-proxy kube-scheduler kube-controller-manager kube-apiserver etcd containerd registry; do
    stop_component "$dir" "$c" 15
  done
  # Pod network namespaces and the mounts kubelet and containerd made under DIR.
  for m in /run/netns/cni-*; do
    [[ -e $m ]] || continue
    ip netns delete "$(basename "$m")" 2>/dev/null || { umount -l "$m" 2>/dev/null; rm -f "$m"; }
  done
  awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  ip link delete "$BRIDGE" 2>/dev/null || true
  while iptables -D "${FENCE_RULE[@]}" 2>/dev/null; do :; done
  remove_kubepods_cgroups
  remove_chains
  restore_sysctls "$dir"
  rm -rf /run/containerd
}

remove_kubepods_cgroups() {
  local root
  for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/unified/kubepods; do
    [[ -d $root ]] || continue
    find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

remove_chains() { # the chains kubelet and CNI add that kube-proxy --cleanup leaves
  local table chain
  for table in filter nat mangle; do
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE-|CNI-)/ {print $2}'); do
      iptables -t "$table" -S 2>/dev/null | awk -v c="$chain" '$1 == "-A" && $0 ~ "-j " c "( |$)"' |
        sed 's/^-A/-D/' | while read -r rule; do
          # shellcheck disable=SC2086 # a rule is words
          iptables -t "$table" $rule 2>/dev/null || true
        done
      iptables -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE-|CNI-)/ {print $2}'); do
      iptables -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
}
