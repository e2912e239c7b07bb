#!/usr/bin/env bash
# End to end on a kind cluster: build and load the images, install the chart, seed S3 with a synthetic
# flight, check every example against the real API server (server-side dry run: CRD schema and CEL
# rules), run examples/reconstruction.yaml (made CPU-only by tests/e2e/overlay) to Succeeded while
# killing the leading operator replica, and collect logs on failure.
#
# Needs docker, kind, kubectl and helm, and network access for the image builds. It cannot run on the
# project's development machines (no Docker engine there); tests/e2e/test_kind_script.py checks it
# statically and tests each piece it calls. Usage: `make e2e` (or bash tests/e2e/kind.sh).
# Environment: CLUSTER (kind cluster name), KEEP_CLUSTER=1 (don't delete it), TIMEOUT (seconds to wait
# for Succeeded), ARTIFACTS (where logs go on failure), TORCH_INDEX_URL (CPU torch wheels).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
HERE=tests/e2e
CLUSTER="${CLUSTER:-spaceport-e2e}"
NS=spaceport-e2e
S3_NS=spaceport-e2e-s3
SYSTEM_NS=spaceport-system
RELEASE=spaceport
RECON=quarry-survey
TIMEOUT="${TIMEOUT:-2700}"
ARTIFACTS="${ARTIFACTS:-$ROOT/out/e2e-logs}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
OPERATOR_IMAGE=spaceport-operator:e2e
STAGE_IMAGE=spaceport-stage:e2e

log() { printf '\n=== %s\n' "$*"; }

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind.sh: '$tool' not found; needs docker, kind, kubectl, helm" >&2; exit 2; }
done

collect_logs() {
  log "collecting logs into $ARTIFACTS"
  mkdir -p "$ARTIFACTS"
  kubectl get all,reconstructions,events -A -o wide >"$ARTIFACTS/cluster.txt" 2>&1 || true
  kubectl -n "$NS" get reconstructions -o yaml >"$ARTIFACTS/reconstructions.yaml" 2>&1 || true
  kubectl -n "$NS" describe jobs,pods >"$ARTIFACTS/describe-e2e.txt" 2>&1 || true
  kubectl -n "$SYSTEM_NS" describe statefulset,pods >"$ARTIFACTS/describe-operator.txt" 2>&1 || true
  for pod in $(kubectl -n "$SYSTEM_NS" get pods -o name 2>/dev/null); do
    kubectl -n "$SYSTEM_NS" logs "$pod" --all-containers >"$ARTIFACTS/operator-${pod#pod/}.log" 2>&1 || true
    kubectl -n "$SYSTEM_NS" logs "$pod" --all-containers --previous >"$ARTIFACTS/operator-${pod#pod/}.previous.log" 2>/dev/null || true
  done
  for pod in $(kubectl -n "$NS" get pods -o name 2>/dev/null); do
    kubectl -n "$NS" logs "$pod" --all-containers >"$ARTIFACTS/${pod#pod/}.log" 2>&1 || true
  done
  kind export logs "$ARTIFACTS/kind" --name "$CLUSTER" >/dev/null 2>&1 || true
}

finish() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    collect_logs
    echo "kind.sh: FAILED (exit $rc); logs in $ARTIFACTS" >&2
  fi
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap finish EXIT

log "kind cluster $CLUSTER"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 180s
fi
kubectl config use-context "kind-$CLUSTER"

log "images (stage image: CPU variant; kind has no GPU)"
make images OPERATOR_IMAGE="$OPERATOR_IMAGE" STAGE_IMAGE="$STAGE_IMAGE" \
  STAGE_BUILD_ARGS="--build-arg BUILD_BASE=ubuntu:24.04 --build-arg RUNTIME_BASE=ubuntu:24.04 --build-arg GSPLAT_BUILD_NO_CUDA=1 --build-arg TORCH_INDEX_URL=$TORCH_INDEX_URL"
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$STAGE_IMAGE"

log "S3 endpoint (moto) in $S3_NS"
kubectl create namespace "$S3_NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$S3_NS" apply -f "$HERE/s3.yaml"
kubectl -n "$S3_NS" rollout status deployment/s3 --timeout=300s

log "namespace $NS (restricted Pod Security Standard) and storage credentials"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$NS" --overwrite pod-security.kubernetes.io/enforce=restricted
kubectl -n "$NS" create secret generic spaceport-s3 --dry-run=client -o yaml \
  --from-literal=AWS_ACCESS_KEY_ID=e2e --from-literal=AWS_SECRET_ACCESS_KEY=e2e \
  --from-literal=AWS_REGION=us-east-1 --from-literal=AWS_ENDPOINT_URL="http://s3.$S3_NS.svc.cluster.local:5000" \
  | kubectl apply -f -

log "chart"
helm upgrade --install "$RELEASE" charts/spaceport --namespace "$SYSTEM_NS" --create-namespace \
  -f "$HERE/values-kind.yaml" \
  --set operator.image.repository=spaceport-operator --set operator.image.tag=e2e \
  --set stageImage.repository=spaceport-stage --set stageImage.tag=e2e \
  --wait --timeout 5m
kubectl -n "$SYSTEM_NS" rollout status "statefulset/$RELEASE" --timeout=300s

log "seed photos"
kubectl -n "$NS" create configmap seed-photos --from-file=seed_photos.py="$HERE/seed_photos.py" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" delete job seed-photos --ignore-not-found
kubectl -n "$NS" apply -f "$HERE/seed-job.yaml"
kubectl -n "$NS" wait --for=condition=complete job/seed-photos --timeout=600s

log "every example against the API server (dry run)"
kubectl create namespace surveys --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" apply --dry-run=server -f examples/   # every top-level example (not recursive)
kubectl apply --dry-run=server -k examples/gitops/overlays/production

log "run $RECON"
kubectl kustomize --load-restrictor=LoadRestrictionsNone "$HERE/overlay" | kubectl apply -f -

phase() { kubectl -n "$NS" get reconstruction "$RECON" -o jsonpath='{.status.phase}' 2>/dev/null || true; }
killed_leader=0
deadline=$((SECONDS + TIMEOUT))
while :; do
  current="$(phase)"
  case "$current" in
    Succeeded) break ;;
    Failed) echo "kind.sh: $RECON failed: $(kubectl -n "$NS" get reconstruction "$RECON" -o jsonpath='{.status.message}')" >&2; exit 1 ;;
    Running)
      # High availability: take the leader (pod -0, top priority) away for good mid-run, by starting
      # the StatefulSet's ordinals at 1. Only the stand-by (pod -1) is left; the run can only finish
      # if it takes over and creates the remaining stage Jobs.
      if [ "$killed_leader" = 0 ]; then
        log "removing the leading operator replica $RELEASE-0"
        kubectl -n "$SYSTEM_NS" patch statefulset "$RELEASE" --type merge \
          -p '{"spec": {"ordinals": {"start": 1}, "replicas": 1}}'
        kubectl -n "$SYSTEM_NS" wait --for=delete "pod/$RELEASE-0" --timeout=120s
        killed_leader=1
      fi ;;
  esac
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "kind.sh: $RECON not Succeeded after ${TIMEOUT}s (phase: ${current:-none})" >&2
    exit 1
  fi
  sleep 10
done

log "$RECON Succeeded"
kubectl -n "$NS" get reconstruction "$RECON" -o jsonpath='{.status.outputs}{"\n"}{.status.metrics}{"\n"}'
sog="$(kubectl -n "$NS" get reconstruction "$RECON" -o jsonpath='{.status.outputs}' | grep -o 's3://[^"]*\.sog' | head -n1 || true)"
[ -n "$sog" ] || { echo "kind.sh: status.outputs names no .sog" >&2; exit 1; }
echo "kind.sh: PASSED ($sog)"
