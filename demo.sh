#!/usr/bin/env bash
# One-command local demo on a real control plane:
#
#   ./demo.sh              # build, start everything, print a token and a curl line; Ctrl-C stops it all
#   ./demo.sh --check      # the same, then create a namespace through the API, use its
#                          # kubeconfig as a person would (the printed kubectl line), delete it, exit
#   ./demo.sh --cluster-bin  # print the control-plane binary path it uses (the tests' cache key), exit
#
# What it runs, all on loopback: the test control plane (etcd + kube-apiserver +
# kube-controller-manager from tests/cluster, built once and cached under
# target/cluster/ exactly as the tests cache it), the RBAC of function/ and
# cronjob/ (ServiceAccounts, least-privilege ClusterRoles, admission policies,
# the empty grant ClusterRole), the provisioner and `reaper --watch`, each as
# its own ServiceAccount with a token from the TokenRequest API.
#
# Demo only: the grant ClusterRole (empty in production, function/grant-clusterrole.yaml)
# is given DEMO_GRANT_RULES below, so the returned kubeconfig can do what a
# person tries first: ConfigMaps, Pods, Services, Deployments in its namespace.
#
# Environment: NP_CLUSTER_BIN (a prebuilt harness binary), NP_CLUSTER_REBUILD=1
# (run the control plane's `go build` even when target/cluster/ has it; CI sets
# this so the cold path runs on every CI run), NP_DEMO_PORT (8080),
# NP_DEMO_INTERNAL_PORT (9090), NP_DEMO_REAPER_PORT (9091), NP_DEMO_SKIP_BUILD=1
# with NP_PROVISIONER_BIN / NP_REAPER_BIN (use binaries built elsewhere).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
CHECK=0
PRINT_CLUSTER_BIN=0
case "${1:-}" in
  --check) CHECK=1 ;;
  --cluster-bin) PRINT_CLUSTER_BIN=1 ;;
  "") ;;
  *) echo "usage: $0 [--check | --cluster-bin]" >&2; exit 2 ;;
esac

PORT=${NP_DEMO_PORT:-8080}
INTERNAL_PORT=${NP_DEMO_INTERNAL_PORT:-9090}
REAPER_PORT=${NP_DEMO_REAPER_PORT:-9091}
NS=namespace-provisioner

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is required: $2"; }
need curl "apt-get install curl"

# The control plane: the same binary and cache key as tests/support/mod.rs
# (sha256 of go.mod, go.sum and main.go, concatenated; first 16 hex digits).
# tests/images.rs checks that both name the same file.
if [[ -n "${NP_CLUSTER_BIN:-}" ]]; then
  CLUSTER=$NP_CLUSTER_BIN
else
  tag=$(cat tests/cluster/go.mod tests/cluster/go.sum tests/cluster/main.go | sha256sum | cut -c1-16)
  CLUSTER=$ROOT/target/cluster/np-cluster-$tag
fi
if ((PRINT_CLUSTER_BIN)); then
  echo "$CLUSTER"
  exit 0
fi

# --- build ----------------------------------------------------------------
if [[ "${NP_DEMO_SKIP_BUILD:-0}" == 1 ]]; then
  PROVISIONER=${NP_PROVISIONER_BIN:?NP_DEMO_SKIP_BUILD=1 needs NP_PROVISIONER_BIN}
  REAPER=${NP_REAPER_BIN:?NP_DEMO_SKIP_BUILD=1 needs NP_REAPER_BIN}
else
  need cargo "install Rust >= 1.89 with rustup"
  say "building the provisioner and the reaper (cargo build)"
  cargo build --locked --bin provisioner --bin reaper >&2
  PROVISIONER=$ROOT/target/debug/provisioner
  REAPER=$ROOT/target/debug/reaper
fi

if [[ -z "${NP_CLUSTER_BIN:-}" ]] && { [[ ! -x "$CLUSTER" ]] || [[ "${NP_CLUSTER_REBUILD:-0}" == 1 ]]; }; then
  need go "install Go >= 1.24 (the control plane is built from the k8s.io/kubernetes module)"
  if [[ -x "$CLUSTER" ]]; then
    say "rebuilding the local control plane (NP_CLUSTER_REBUILD=1; seconds with a warm Go build cache)"
  else
    say "building the local control plane $CLUSTER (first time only: ~8 minutes on 2 cores)"
  fi
  mkdir -p target/cluster
  (cd tests/cluster && GOTOOLCHAIN=${GOTOOLCHAIN:-auto} go build -trimpath -ldflags='-s -w' -o "$CLUSTER.tmp$$" .)
  mv "$CLUSTER.tmp$$" "$CLUSTER"
fi
[[ -x "$CLUSTER" ]] || die "no control plane binary at $CLUSTER"

# --- run ------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/np-demo.XXXXXX")
PIDS=()
# shellcheck disable=SC2317  # invoked through trap
cleanup() {
  trap - EXIT INT TERM
  say "stopping"
  # Reverse order: the binaries first, the control plane last.
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Wait (bounded) until "$@" succeeds.
wait_for() {
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
    for log in "$WORK"/*.log; do echo "--- last lines of $log" >&2; tail -n 20 "$log" >&2; done
    die "$what did not come up within ${seconds}s"
  fi
    sleep 0.2
  done
}

say "starting the control plane (logs: $WORK/cluster.log)"
"$CLUSTER" serve --data-dir "$WORK/cluster" >"$WORK/cluster.json" 2>"$WORK/cluster.log" &
PIDS+=($!)
wait_for "the control plane" 120 test -s "$WORK/cluster.json"
ADMIN=$(sed -n 's/.*"kubeconfig":"\([^"]*\)".*/\1/p' "$WORK/cluster.json")
SERVER=$(sed -n 's/.*"server":"\([^"]*\)".*/\1/p' "$WORK/cluster.json")
CA=$WORK/cluster/ca.crt
kubectl() { "$CLUSTER" kubectl --kubeconfig "$ADMIN" "$@"; }

say "applying the RBAC of function/ and cronjob/ (grant ClusterRole, ServiceAccounts, least privilege, admission policies)"
kubectl apply -f function/namespace.yaml >&2
kubectl apply -f function/grant-clusterrole.yaml \
  -f function/serviceaccount.yaml -f function/clusterrole.yaml -f function/clusterrolebinding.yaml \
  -f function/admission-policy.yaml \
  -f cronjob/base/serviceaccount.yaml -f cronjob/base/clusterrole.yaml -f cronjob/base/clusterrolebinding.yaml \
  -f cronjob/base/admission-policy.yaml -f cronjob/watch/lease-role.yaml >&2
# (The Deployments and the CronJob are left out: this control plane has no
# kubelet to run pods. The binaries run here instead, as the same identities.)

# Demo only: what a returned kubeconfig may do inside its own namespace. In
# production the grant ClusterRole starts empty and an administrator decides.
DEMO_GRANT_RULES='{"rules":[
  {"apiGroups":[""],"resources":["configmaps","pods","pods/log","services"],"verbs":["get","list","watch","create","update","patch","delete"]},
  {"apiGroups":["apps"],"resources":["deployments","replicasets"],"verbs":["get","list","watch","create","update","patch","delete"]}]}'
say "demo only: granting returned kubeconfigs configmaps, pods, services, deployments (get/list/watch/create/update/patch/delete) in their namespace"
kubectl patch clusterrole namespace-provisioner-grant --type=merge -p "$DEMO_GRANT_RULES" >&2

# A kubeconfig for ServiceAccount $1, token from the TokenRequest API.
sa_kubeconfig() {
  local sa=$1 out=$WORK/$1.kubeconfig token
  token=$(kubectl -n "$NS" create token "$sa" --duration=24h)
  "$CLUSTER" kubectl config --kubeconfig "$out" set-cluster demo --server "$SERVER" \
    --certificate-authority "$CA" --embed-certs >/dev/null
  "$CLUSTER" kubectl config --kubeconfig "$out" set-credentials "$sa" --token "$token" >/dev/null
  "$CLUSTER" kubectl config --kubeconfig "$out" set-context demo --cluster demo --user "$sa" >/dev/null
  "$CLUSTER" kubectl config --kubeconfig "$out" use-context demo >/dev/null
  echo "$out"
}
PROVISIONER_KUBECONFIG=$(sa_kubeconfig namespace-provisioner)
REAPER_KUBECONFIG=$(sa_kubeconfig namespace-provisioner-reaper)

TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
(umask 077 && printf 'demo %s\n' "$TOKEN" >"$WORK/tokens")

say "starting the provisioner on 127.0.0.1:$PORT (internal :$INTERNAL_PORT; log: $WORK/provisioner.log)"
env -u AWS_LAMBDA_RUNTIME_API \
  NP_KUBECONFIG="$PROVISIONER_KUBECONFIG" NP_TOKEN_FILE="$WORK/tokens" \
  NP_LISTEN="127.0.0.1:$PORT" NP_INTERNAL_LISTEN="127.0.0.1:$INTERNAL_PORT" \
  NP_TTL=30m NP_MAX_TTL=2h \
  "$PROVISIONER" >"$WORK/provisioner.log" 2>&1 &
PIDS+=($!)

say "starting the reaper in watch mode (metrics :$REAPER_PORT; log: $WORK/reaper.log)"
NP_KUBECONFIG="$REAPER_KUBECONFIG" NP_MAX_TTL=2h \
  NP_LEASE_NAMESPACE="$NS" NP_METRICS_ADDR="127.0.0.1:$REAPER_PORT" \
  "$REAPER" --watch >"$WORK/reaper.log" 2>&1 &
PIDS+=($!)

wait_for "the provisioner (/readyz)" 60 curl -fsS "http://127.0.0.1:$INTERNAL_PORT/readyz"
wait_for "the reaper (/healthz)" 60 curl -fsS "http://127.0.0.1:$REAPER_PORT/healthz"

CURL="curl -fsS -X POST -H 'Authorization: Bearer $TOKEN' 'http://127.0.0.1:$PORT/api/v1/namespace?ttl=10m' > np.kubeconfig"
# The one line that proves the kubeconfig works: it creates a Deployment in
# the new namespace and lists what is there (the ReplicaSet controller adds a
# ReplicaSet; no pod runs, this control plane has no kubelet).
TRY="$CLUSTER kubectl --kubeconfig np.kubeconfig create deployment hello --image=registry.k8s.io/pause:3.10 && $CLUSTER kubectl --kubeconfig np.kubeconfig get deployments,configmaps"
cat <<EOF

namespace-provisioner is running on a real local control plane.

  API server      $SERVER   (admin kubeconfig: $ADMIN)
  provisioner     http://127.0.0.1:$PORT   (/healthz /readyz /metrics on :$INTERNAL_PORT)
  reaper --watch  /healthz /metrics on :$REAPER_PORT
  tenant          demo
  token           $TOKEN

Get a namespace (the body is a kubeconfig for it):

  $CURL

Use it (demo grant: configmaps, pods, services, deployments in that namespace only):

  $TRY

List yours:  curl -fsS -H 'Authorization: Bearer $TOKEN' http://127.0.0.1:$PORT/api/v1/namespaces
Outside its namespace it can do nothing:  $CLUSTER kubectl --kubeconfig np.kubeconfig get configmaps -n kube-system
What the grant allows (production starts empty):  $CLUSTER kubectl --kubeconfig $ADMIN get clusterrole namespace-provisioner-grant -o yaml

EOF

if ((CHECK)); then
  say "self-check: create a namespace with the curl line above, run the kubectl line above, delete the namespace"
  (cd "$WORK" && eval "$CURL")
  ns=$("$CLUSTER" kubectl --kubeconfig "$WORK/np.kubeconfig" config view --minify -o 'jsonpath={.contexts[0].context.namespace}')
  who=$("$CLUSTER" kubectl --kubeconfig "$WORK/np.kubeconfig" auth whoami -o 'jsonpath={.status.userInfo.username}')
  [[ "$who" == "system:serviceaccount:$ns:namespace-provisioner" ]] || die "the kubeconfig acts as '$who'"
  tried=$(cd "$WORK" && eval "$TRY") || die "the kubectl line failed: $tried"
  printf '%s\n' "$tried" >&2
  grep -q '^deployment.apps/hello' <<<"$tried" || die "the kubectl line did not show the Deployment: $tried"
  if "$CLUSTER" kubectl --kubeconfig "$WORK/np.kubeconfig" get configmaps -n kube-system >/dev/null 2>&1; then
    die "the kubeconfig can read kube-system; it must act only in $ns"
  fi
  curl -fsS -X DELETE -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/namespaces/$ns" >/dev/null
  echo "demo check passed: created $ns, its kubeconfig acts as $who, created deployment hello there and nothing outside, deleted $ns"
  exit 0
fi

echo "Ctrl-C stops everything."
# Until Ctrl-C, or until one of them dies.
wait -n "${PIDS[@]}" || true
for log in cluster provisioner reaper; do
  echo "--- last lines of $log.log" >&2
  tail -n 20 "$WORK/$log.log" >&2 || true
done
die "a component stopped unexpectedly"
