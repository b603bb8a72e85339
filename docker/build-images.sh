#!/usr/bin/env bash
# Builds the images docker/compose.yaml uses, from binaries built on this host; pulls nothing.
#   gotel:dev                 target/release/gotel + the libraries ldd lists (Dockerfile.prebuilt)
#   gotel-demo-frontend:dev   docker/demo/frontend, static Go (demo/Dockerfile)
#   gotel-demo-backend:dev    docker/demo/backend, static Go
#   gotel-demo-inventory:dev  docker/demo/inventory (gRPC, google.golang.org/grpc), static Go
#   gotel-jaeger:1.76.0       Jaeger v2 built by tools/build-jaeger.sh (jaeger.Dockerfile)
# Env: GOTEL_BIN (default $CARGO_TARGET_DIR or target, /release/gotel; build it first with
#      cargo build --release -p gotel),
#      GOTEL_IMAGE (tag of the gotel image, default gotel:dev, as docker/compose.yaml reads it),
#      GO (Go toolchain for the demo services), GOTEL_CACHE (default /var/cache/gotel; the demo's
#      Go modules (grpc-go and its dependencies, from the module proxy once) and build cache live
#      in $GOTEL_CACHE/gomodcache and gocache, outside the clone),
#      IMAGES="gotel demo jaeger" to build only some.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${GOTEL_CACHE:-/var/cache/gotel}"
STAGE="$CACHE/stage"
GOTEL_BIN="${GOTEL_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/gotel}"
IMAGES="${IMAGES:-gotel demo jaeger}"
DOCKER="${DOCKER:-$( [[ -x /usr/bin/docker ]] && echo /usr/bin/docker || echo docker)}"
export DOCKER_BUILDKIT=0   # the classic builder: no frontend image to pull, no buildx needed
say() { echo "build-images: $*"; }
die() { echo "build-images: error: $*" >&2; exit 1; }

build() { # build TAG DOCKERFILE CONTEXT [ARGS...]
  local tag=$1 file=$2 ctx=$3; shift 3
  cp "$file" "$ctx/Dockerfile"
  "$DOCKER" build -q -t "$tag" "$@" "$ctx" >/dev/null || die "docker build $tag failed"
  say "built $tag ($("$DOCKER" image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.1f MB", $1/1e6}'))"
}

# shellcheck source=tools/go-toolchains.sh
GOTEL_ROOT="$ROOT" . "$ROOT/tools/go-toolchains.sh"
find_go() { default_go || die "no Go toolchain (run tools/install-deps.sh)"; }

if [[ " $IMAGES " == *" gotel "* ]]; then
  [[ -x "$GOTEL_BIN" ]] || die "$GOTEL_BIN missing: cargo build --release -p gotel"
  d="$STAGE/gotel"; rm -rf "$d"; mkdir -p "$d/rootfs/usr/local/bin" "$d/rootfs/tmp" "$d/rootfs/etc/ssl/certs"
  chmod 1777 "$d/rootfs/tmp"
  # Debug info stays in target/; the image gets a stripped copy.
  if command -v objcopy >/dev/null; then objcopy --strip-debug "$GOTEL_BIN" "$d/rootfs/usr/local/bin/gotel"
  else cp "$GOTEL_BIN" "$d/rootfs/usr/local/bin/gotel"; fi
  # The dynamic loader and every library the binary needs, at the same paths as on this host.
  ldd "$GOTEL_BIN" | grep -oE '/[^ ]+' | while read -r lib; do
    cp -L --parents "$lib" "$d/rootfs/"
  done
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] && cp /etc/ssl/certs/ca-certificates.crt "$d/rootfs/etc/ssl/certs/"
  build "${GOTEL_IMAGE:-gotel:dev}" "$ROOT/docker/Dockerfile.prebuilt" "$d"
fi

if [[ " $IMAGES " == *" demo "* ]]; then
  go="$(find_go)"
  d="$STAGE/demo"; rm -rf "$d"; mkdir -p "$d"
  export GOCACHE="${GOCACHE:-$CACHE/gocache}" GOMODCACHE="${GOMODCACHE:-$CACHE/gomodcache}" \
    GOFLAGS="${GOFLAGS:-} -mod=mod" GOTOOLCHAIN=local
  for app in frontend backend inventory; do
    # Static, with symbols and DWARF kept: gotel resolves parameter names and struct fields from it.
    (cd "$ROOT/docker/demo" && CGO_ENABLED=0 "$go" build -trimpath -o "$d/$app" "./$app") \
      || die "go build $app failed"
  done
  say "demo services built with $("$go" version | cut -d' ' -f3)"
  for app in frontend backend inventory; do
    build "gotel-demo-$app:dev" "$ROOT/docker/demo/Dockerfile" "$d" --build-arg "APP=$app"
  done
fi

if [[ " $IMAGES " == *" jaeger "* ]]; then
  jaeger="$("$ROOT/tools/build-jaeger.sh")"
  d="$STAGE/jaeger"; rm -rf "$d"; mkdir -p "$d/rootfs/usr/local/bin" "$d/rootfs/etc/jaeger" "$d/rootfs/tmp"
  chmod 1777 "$d/rootfs/tmp"
  cp "$jaeger" "$d/rootfs/usr/local/bin/jaeger"
  cp "$ROOT/otel-config/jaeger.yaml" "$d/rootfs/etc/jaeger/config.yaml"
  # A minimal trace viewer (the Go-module build of Jaeger has no UI assets): docker/jaeger-ui.
  cp -r "$ROOT/docker/jaeger-ui" "$d/rootfs/etc/jaeger/ui"
  build gotel-jaeger:1.76.0 "$ROOT/docker/jaeger.Dockerfile" "$d"
fi
