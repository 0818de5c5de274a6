#!/usr/bin/env bash
# Time to a serving preview on the real node: from a signed pull_request.opened delivery to the
# preview's Service answering with the PR's head SHA, median of N (default 10), beside the
# same done by hand (kubectl create namespace, apply, rollout status, curl) in the same run.
# prenv runs as its debug build (what the tests run), so its figure is if anything too high.
# Also prints the cluster's memory. Starts (and stops) its own cluster unless KUBECONFIG and
# PRENV_BENCH_REGISTRY name a running one.
#
#   scripts/bench-preview.sh [N]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
n=${1:-10}
say() { printf '%s\n' "$*" >&2; }
now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }

PATH="$(scripts/tools.sh):$PATH"
cargo build --quiet -p prenv -p github-standin
work=$(mktemp -d -t prenv-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -z ${own_cluster:-} ]] || scripts/cluster.sh down "$work/cluster" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
if [[ -z ${KUBECONFIG:-} || -z ${PRENV_BENCH_REGISTRY:-} ]]; then
  own_cluster=1
  KUBECONFIG=$(scripts/cluster.sh up "$work/cluster" | tail -n1)
  PRENV_BENCH_REGISTRY=$(scripts/cluster.sh registry "$work/cluster")
fi
export KUBECONFIG
registry=$PRENV_BENCH_REGISTRY
app=$(scripts/demo-app/build.sh "$registry" 2>/dev/null | tail -n1)
tag=$(date +%s)
run=bench-$tag

# The preview: the demo app at the head (its SHA in the pod template), behind a Service.
resources() { # resources SHA-EXPRESSION
  cat <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: "$app"
        env: [{name: GIT_SHA, value: "$1"}]
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
        securityContext:
          runAsNonRoot: true
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
          seccompProfile: {type: RuntimeDefault}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
EOF
}

# wait_served NS SHA: until the Service of NS answers with SHA (polling every 50 ms).
wait_served() {
  local ip=""
  for _ in $(seq 1 2400); do
    [[ -n $ip ]] || ip=$(kubectl get service -n "$1" web -o jsonpath='{.spec.clusterIP}' 2>/dev/null || true)
    if [[ -n $ip ]] && curl -fsS --max-time 1 "http://$ip/" 2>/dev/null | grep -x "sha=$2" >/dev/null; then
      return 0
    fi
    sleep 0.05
  done
  say "timed out waiting for $1 to serve $2"
  return 1
}

say "== baseline: kubectl create namespace, apply, rollout status, curl ($n times)"
base=()
for i in $(seq 1 "$n"); do
  ns=$run-hand-$i
  sha=$(openssl rand -hex 20)
  start=$(now_ms)
  kubectl create namespace "$ns" >/dev/null
  resources "$sha" | kubectl apply -n "$ns" -f - >/dev/null
  kubectl rollout status -n "$ns" deployment/web --timeout=120s >/dev/null
  wait_served "$ns" "$sha"
  base+=($(($(now_ms) - start)))
  kubectl delete namespace "$ns" --wait=false >/dev/null
done

say "== prenv: pull_request.opened delivery -> the preview serves its head ($n times)"
secret=$(openssl rand -hex 20)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
admin=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/debug/github-standin --repo acme/bench --token bench-token=prenv-bench \
  --hook "http://127.0.0.1:$port/webhooks/github" --hook-secret "$secret" \
  >"$work/standin.out" 2>"$work/standin.log" &
pids+=($!)
for _ in $(seq 100); do grep -q 'listening on' "$work/standin.out" 2>/dev/null && break; sleep 0.1; done
gh=$(sed -n 's/^listening on //p' "$work/standin.out" | head -n1)
gh=${gh%/}
kubectl apply --server-side -f deploy/crds.yaml >/dev/null
kubectl apply --server-side -f deploy/prenv.yaml -l prenv.dev/deployer-role=true >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/previewtemplates.prenv.dev crd/previewenvironments.prenv.dev >/dev/null
kubectl create namespace "$run" >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: prenv.dev/v1alpha1
kind: PreviewTemplate
metadata: {name: b$tag, namespace: $run}
spec:
  repository: acme/bench
  resources: |
$(resources '{{ pr.head_sha }}' | sed 's/^/    /')
EOF
PRENV_WEBHOOK_SECRET=$secret GITHUB_TOKEN=bench-token target/debug/prenv serve \
  --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" --namespace "$run" \
  --github-api-url "$gh" >"$work/prenv.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
prenv_ms=()
for i in $(seq 1 "$n"); do
  sha=$(openssl rand -hex 20)
  start=$(now_ms)
  curl -fsS -XPOST "$gh/_standin/repos/acme/bench/pulls" \
    -d '{"title":"Bench '"$i"'","author":"octocat","head_sha":"'"$sha"'"}' >/dev/null
  wait_served "b$tag-pr-$i" "$sha"
  prenv_ms+=($(($(now_ms) - start)))
done
rss=$(ps -o rss= -p "${pids[1]}" | tr -d ' ')

b=$(printf '%s\n' "${base[@]}" | median)
p=$(printf '%s\n' "${prenv_ms[@]}" | median)
mem=0
for f in /proc/[0-9]*/cmdline; do
  if { tr '\0' ' ' <"$f"; } 2>/dev/null | grep -E '^[^ ]*(etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy|containerd|docker-registry)( |$)|containerd-shim' >/dev/null; then
    pid=${f#/proc/}; pid=${pid%/cmdline}
    mem=$((mem + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
  fi
done
printf '\npreview serving its SHA, median of %s on this machine (%s cores):\n' "$n" "$(nproc)"
printf '  by hand (kubectl create ns + apply + rollout + curl): %6d ms   [%s]\n' "$b" "${base[*]}"
printf '  prenv (pull_request.opened -> Service answers):       %6d ms   [%s]\n' "$p" "${prenv_ms[*]}"
printf '  ratio prenv / by hand: %s\n' "$(awk -v p="$p" -v b="$b" 'BEGIN {printf "%.2f", p / b}')"
printf '  prenv RSS after %s previews: %s MiB; cluster processes RSS: %s MiB\n' "$n" \
  "$((rss / 1024))" "$((mem / 1024))"
