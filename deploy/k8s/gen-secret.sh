#!/usr/bin/env bash
# Generates the cluster CA and one certificate per StatefulSet pod with
# `purgecast certs`, and prints the Secret `purgecast-certs` that
# statefulset.yaml mounts at /certs. The CA key stays in the output directory
# (keep it to issue more certificates with --reuse-ca); it is not put in the
# Secret.
#
#   deploy/k8s/gen-secret.sh [--replicas 5] [--namespace purgecast] [--out DIR] > secret.yaml
#   kubectl apply -n purgecast -f secret.yaml
#
# The binary is $PURGECAST_BIN, else `purgecast` on PATH, else target/*/purgecast.
set -euo pipefail

replicas=5
namespace=purgecast
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) replicas="${2:?}"; shift 2 ;;
    --namespace) namespace="${2:?}"; shift 2 ;;
    --out) out="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gen-secret: unknown argument: $1" >&2; exit 1 ;;
  esac
done
case "$replicas" in ''|*[!0-9]*) echo "gen-secret: --replicas must be a number" >&2; exit 1 ;; esac

root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${PURGECAST_BIN:-}"
if [ -z "$bin" ]; then
  for candidate in "$(command -v purgecast || true)" "$root/target/release/purgecast" "$root/target/debug/purgecast"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then bin="$candidate"; break; fi
  done
fi
[ -n "$bin" ] || { echo "gen-secret: no purgecast binary (set PURGECAST_BIN)" >&2; exit 1; }
if [ -z "$out" ]; then
  out="$(mktemp -d "${TMPDIR:-/tmp}/purgecast-k8s-certs.XXXXXX")"
  echo "gen-secret: CA and keys in $out" >&2
fi

# Peers dial purgecast-<i>.purgecast-peers:7200, so that name is the TLS
# server name each certificate must carry; the longer forms are for clients
# in other namespaces.
args=()
for ((i = 0; i < replicas; i++)); do
  pod="purgecast-$i"
  args+=(--node "$pod:$pod.purgecast-peers,$pod.purgecast-peers.$namespace.svc,$pod.purgecast-peers.$namespace.svc.cluster.local")
done
"$bin" certs --out "$out" "${args[@]}" >&2

b64() { base64 -w0 <"$1"; }
echo "apiVersion: v1"
echo "kind: Secret"
echo "metadata:"
echo "  name: purgecast-certs"
echo "  labels:"
echo "    app.kubernetes.io/name: purgecast"
echo "type: Opaque"
echo "data:"
echo "  ca.pem: $(b64 "$out/ca.pem")"
for ((i = 0; i < replicas; i++)); do
  echo "  purgecast-$i.pem: $(b64 "$out/purgecast-$i.pem")"
  echo "  purgecast-$i-key.pem: $(b64 "$out/purgecast-$i-key.pem")"
done
