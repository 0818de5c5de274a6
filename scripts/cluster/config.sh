# shellcheck shell=bash
# Sourced by scripts/cluster.sh: certificates, kubeconfigs and the components' configuration
# files under the cluster's DIR. Needs: die, the address constants of scripts/cluster.sh.

make_pki() { # make_pki DIR/pki
  local pki=$1
  mkdir -p "$pki"
  chmod 700 "$pki"
  (
    cd "$pki"
    sign() { # sign NAME SUBJECT EXTENSIONS
      openssl genrsa -out "$1.key" 2048 2>/dev/null
      openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
      printf '%s\n' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
        -days 365 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    }
    openssl genrsa -out ca.key 2048 2>/dev/null
    openssl req -x509 -new -key ca.key -sha256 -days 365 -subj "/CN=prenv-cluster-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out ca.crt 2>/dev/null
    # Pods reach the API server at the kubernetes Service's address, the host at the bridge's.
    sign apiserver /CN=kube-apiserver "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,IP:127.0.0.1,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    # The API server's identity towards kubelet (logs, exec, port-forward).
    sign kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" \
      "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    sign kubelet "/CN=$NODE_NAME" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  ) || die "certificate generation with openssl failed"
}

write_kubeconfig() { # write_kubeconfig FILE TOKEN USER
  local file=$1 token=$2 user=$3 ca
  ca=$(base64 -w0 <"$(dirname "$file")/pki/ca.crt")
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: prenv
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority-data: $ca
users:
- name: $user
  user:
    token: $token
contexts:
- name: prenv
  context: {cluster: prenv, user: $user, namespace: default}
current-context: prenv
EOF
  chmod 600 "$file"
}

# Static tokens: an admin in system:masters for us and the control-plane components, and the
# node's own identity for kubelet (the Node authorizer and NodeRestriction check it).
make_tokens() { # make_tokens DIR
  local dir=$1 admin node
  admin=$(openssl rand -hex 32)
  node=$(openssl rand -hex 32)
  printf '%s,prenv-admin,prenv-admin,"system:masters"\n%s,system:node:%s,system:node:%s,"system:nodes"\n' \
    "$admin" "$node" "$NODE_NAME" "$NODE_NAME" >"$dir/tokens.csv"
  chmod 600 "$dir/tokens.csv"
  write_kubeconfig "$dir/kubeconfig" "$admin" prenv-admin
  write_kubeconfig "$dir/kubelet.kubeconfig" "$node" "system:node:$NODE_NAME"
}

write_containerd_config() { # write_containerd_config DIR REGISTRY
  local dir=$1 registry=$2
  mkdir -p "$dir/cni/net.d" "$dir/containerd"
  cat >"$dir/containerd/config.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$dir/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$registry/pause:$K8S_VERSION"
  # runc cannot lower oom_score_adj without CAP_SYS_RESOURCE, which this machine lacks.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$registry"]
    endpoint = ["http://$registry"]
EOF
  # No masquerading and no default route: pods reach each other, Services and this host (the
  # bridge's address), nothing else.
  cat >"$dir/cni/net.d/10-prenv.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "prenv",
  "plugins": [{
    "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
    "hairpinMode": true,
    "ipam": {"type": "host-local", "dataDir": "$dir/cni/ipam",
             "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
             "routes": [{"dst": "$SERVICE_CIDR", "gw": "$NODE_IP"}]}
  }]
}
EOF
}

write_kubelet_config() { # write_kubelet_config DIR
  local dir=$1
  cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzPort: 0
tlsCertFile: $dir/pki/kubelet.crt
tlsPrivateKeyFile: $dir/pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$dir/containerd.sock
cgroupDriver: cgroupfs
# These machines have cgroup v1 only; kubelet refuses it from 1.35 unless told.
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
podLogsDir: $dir/pod-logs
serializeImagePulls: false
# The disk is shared with the builds: no image GC or eviction on disk pressure.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
EOF
}

write_proxy_config() { # write_proxy_config DIR HEALTH_PORT METRICS_PORT
  local dir=$1 health=$2 metrics=$3
  # conntrack left alone (zeros), NodePorts only on the bridge's address.
  cat >"$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $dir/kubeconfig}
mode: iptables
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$health
metricsBindAddress: 127.0.0.1:$metrics
clusterCIDR: $POD_CIDR
nodePortAddresses: ["$NODE_IP/32"]
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

write_registry_config() { # write_registry_config DIR PORT
  local dir=$1 port=$2
  mkdir -p "$dir/registry"
  cat >"$dir/registry.yaml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $dir/registry}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$port
EOF
}
