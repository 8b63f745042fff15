#!/usr/bin/env bash
# Deployment tests, for .ci/run: the static manifest checks (Kubernetes,
# compose, Dockerfiles, through the node's config loader), then the tests
# across containers. Uses the binaries of target/<profile> (default debug,
# built by `cargo build --workspace --all-targets`).
#
#   deploy/test/run.sh [--profile debug|release]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
profile="${PURGECAST_PROFILE:-debug}"
case "${1:-}" in
  --profile) profile="${2:?}" ;;
  --profile=*) profile="${1#*=}" ;;
  "") ;;
  *) echo "run.sh: unknown argument: $1" >&2; exit 1 ;;
esac
bin="${CARGO_TARGET_DIR:-$root/target}/$profile/purgecast"
[ -x "$bin" ] || { echo "run.sh: $bin not found: build it first" >&2; exit 1; }

# PyYAML comes with Debian's python3-yaml (a dependency of docker-compose).
python=""
for candidate in python3 /usr/bin/python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import yaml, tomllib' 2>/dev/null; then
    python="$candidate"
    break
  fi
done
[ -n "$python" ] || { echo "run.sh: needs Python 3.11+ with PyYAML (apt-get install python3-yaml)" >&2; exit 1; }

echo "== deploy: manifest checks"
"$python" -B "$root/deploy/test/check_manifests.py" "$bin"
echo "== deploy: container tests"
PURGECAST_PROFILE="$profile" "$root/deploy/test/container-test.sh"
