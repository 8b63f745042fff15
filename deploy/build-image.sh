#!/usr/bin/env bash
# Builds the purgecast container image FROM scratch: nothing is pulled from a
# registry. The image holds purgecast and purgectl as built on this machine,
# the shared libraries they load (found with ldd) and the dynamic loader, a
# minimal /etc and the directories the node uses. See docs/deploy.md.
#
#   deploy/build-image.sh [--profile release|debug] [--tag purgecast:dev]
#                         [--build] [--no-strip] [--keep-context DIR]
#
# By default the binaries in target/<profile>/ are taken as they are and
# built only when missing; --build runs cargo build first in any case.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
profile=release
tag=purgecast:dev
build=0
strip_bins=1
keep=""

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
    --profile=*) profile="${1#*=}"; shift ;;
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --tag=*) tag="${1#*=}"; shift ;;
    --build) build=1; shift ;;
    --no-strip) strip_bins=0; shift ;;
    --keep-context) keep="${2:?--keep-context needs a directory}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-image: unknown argument: $1" >&2; usage >&2; exit 1 ;;
  esac
done
case "$profile" in
  release) cargo_profile=(--release) ;;
  debug) cargo_profile=() ;;
  *) echo "build-image: --profile must be release or debug, not '$profile'" >&2; exit 1 ;;
esac

target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin_dir="$target_dir/$profile"
bins=(purgecast purgectl)

missing=0
for b in "${bins[@]}"; do [ -x "$bin_dir/$b" ] || missing=1; done
if [ "$build" = 1 ] || [ "$missing" = 1 ]; then
  echo "build-image: cargo build (${profile}) of purgecast and purgectl"
  (cd "$root" && cargo build --locked "${cargo_profile[@]}" -p purgecast-node -p purgecast-client \
    --bin purgecast --bin purgectl)
fi
for b in "${bins[@]}"; do
  [ -x "$bin_dir/$b" ] || { echo "build-image: $bin_dir/$b not found after the build" >&2; exit 1; }
done
# Taking binaries as they are is fast but can ship an old build: say so.
newer="$(find "$root"/{core,node,client,proto} -name '*.rs' -newer "$bin_dir/purgecast" -print -quit 2>/dev/null || true)"
if [ -n "$newer" ]; then
  echo "build-image: warning: $newer is newer than $bin_dir/purgecast (use --build to rebuild)" >&2
fi

command -v ldd >/dev/null || { echo "build-image: ldd is required" >&2; exit 1; }
command -v docker >/dev/null || { echo "build-image: docker is required" >&2; exit 1; }

if [ -n "$keep" ]; then
  ctx="$keep"
  rm -rf "$ctx"
  mkdir -p "$ctx"
else
  ctx="$(mktemp -d "${TMPDIR:-/tmp}/purgecast-image.XXXXXX")"
  trap 'rm -rf "$ctx"' EXIT
fi
rootfs="$ctx/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/purgecast" "$ctx/owned/data" "$ctx/owned/certs"
install -d -m 1777 "$rootfs/tmp"

for b in "${bins[@]}"; do
  install -m 0755 "$bin_dir/$b" "$rootfs/usr/local/bin/$b"
  if [ "$strip_bins" = 1 ] && command -v strip >/dev/null; then
    strip --strip-debug "$rootfs/usr/local/bin/$b"
  fi
done

# Every library either binary loads, and the loader, at the path ldd reports
# (the loader finds them there: those are its built-in system directories).
libs="$(for b in "${bins[@]}"; do ldd "$bin_dir/$b"; done |
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)"
if [ -z "$libs" ]; then
  echo "build-image: ldd found no libraries (static binaries?); continuing without any" >&2
fi
for lib in $libs; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
# Merged-/usr hosts report /lib/...; the loader of the image must also exist
# where the binaries' PT_INTERP names it.
interp="$(readelf -l "$bin_dir/purgecast" 2>/dev/null | sed -n 's/.*interpreter: \(.*\)]/\1/p' || true)"
if [ -n "$interp" ] && [ ! -e "$rootfs$interp" ]; then
  mkdir -p "$rootfs$(dirname "$interp")"
  cp -L "$interp" "$rootfs$interp"
fi

cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
purgecast:x:10001:10001:purgecast node:/data:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
purgecast:x:10001:
EOF
# Peer addresses are DNS names (compose services, Kubernetes pods): resolve
# through /etc/hosts, then the resolver the engine writes to resolv.conf.
echo 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
install -m 0644 "$root/deploy/image/node.toml" "$rootfs/etc/purgecast/node.toml"
cp "$root/deploy/image/Dockerfile.scratch" "$ctx/Dockerfile"

version="$("$bin_dir/purgecast" --version | awk '{print $2}')"
revision="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
# Without buildx the docker CLI falls back to the classic builder, which needs
# no image for FROM scratch either; only force it when buildx is absent.
if ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi
echo "build-image: docker build -t $tag (profile $profile, version $version)"
docker build -q -t "$tag" \
  --label "org.opencontainers.image.title=purgecast" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "purgecast.profile=$profile" \
  "$ctx" >/dev/null
size="$(docker image inspect -f '{{.Size}}' "$tag")"
echo "build-image: built $tag: $((size / 1024 / 1024)) MiB ($size bytes)"
