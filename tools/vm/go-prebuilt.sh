#!/usr/bin/env bash
# `go build` of the e2e programs for the test VM, done on the host. Under TCG one `go build` of a
# small program takes 30-60 s (the go command reads and hashes every source file of the standard
# library it imports, then links), so the tests that build their Go program inside the VM would
# spend most of their time building. Go builds are reproducible: a build made on the host with
# the same toolchain, directory, flags and environment is the same file.
#
#   go-prebuilt.sh build DIR GO APPDIR [FLAG...]   host: `GO build -o ... FLAG... .` in APPDIR,
#                                                   kept in DIR/N/ with what was asked
#   go-prebuilt.sh install DIR                      guest: every toolchain named in DIR becomes
#                                                   this script (the real one is kept beside it)
#   go-prebuilt.sh wrap DIR REAL_GO ARG...          guest (the installed `go`): `build -o OUT
#                                                   ARGS .` that DIR has is a copy; anything else
#                                                   runs REAL_GO, with a line saying so for builds
#
# The tests build with GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0 (e2e/src/lib.rs); a build
# asked with another CGO_ENABLED is not served from DIR.
set -euo pipefail
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

# The build's arguments without `-o OUT`, one string: what a prebuilt entry is looked up by.
key_args() {
  local out=() skip=0 a
  for a in "$@"; do
    if ((skip)); then skip=0; continue; fi
    [[ $a == -o ]] && { skip=1; continue; }
    out+=("$a")
  done
  echo "${out[*]}"
}
out_arg() {
  local prev="" a
  for a in "$@"; do
    [[ $prev == -o ]] && { echo "$a"; return; }
    prev=$a
  done
}

case "${1:-}" in
  build)
    dir=$2 go=$3 app=$4
    shift 4
    mkdir -p "$dir"
    n=$(find "$dir" -mindepth 1 -maxdepth 1 -type d | wc -l)
    e="$dir/$n"
    mkdir -p "$e"
    (cd "$app" && GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0 "$go" build -o "$e/bin" "$@" .)
    printf '%s\n' "$go" >"$e/go"
    printf '%s\n' "$(cd "$app" && pwd)" >"$e/cwd"
    printf '%s\n' "$(key_args build "$@" .)" >"$e/args"
    ;;
  install)
    dir=$2
    for g in $(cat "$dir"/*/go | sort -u); do
      [[ -e "$g.gotel-vm-real" ]] && continue
      mv "$g" "$g.gotel-vm-real"
      printf '#!/bin/sh\nexec /bin/bash %q wrap %q %q "$@"\n' "$SELF" "$dir" "$g.gotel-vm-real" >"$g"
      chmod 755 "$g"
    done
    ;;
  wrap)
    dir=$2 real=$3
    shift 3
    go=${real%.gotel-vm-real}
    if [[ ${1:-} == build && ${CGO_ENABLED:-} == 0 ]]; then
      out=$(out_arg "$@") args=$(key_args "$@")
      for e in "$dir"/*/; do
        [[ -f $e/bin && "$(cat "$e/go")" == "$go" && "$(cat "$e/cwd")" == "$PWD" && "$(cat "$e/args")" == "$args" ]] || continue
        if [[ -n $out ]]; then cp "$e/bin" "$out"; exit 0; fi
      done
      echo "gotel-vm: no prebuilt binary for '$go $args' in $PWD: building it here (slow under TCG)" >&2
    fi
    exec "$real" "$@"
    ;;
  *)
    echo "usage: go-prebuilt.sh build DIR GO APPDIR [FLAG...] | install DIR | wrap DIR REAL_GO ARG..." >&2
    exit 2
    ;;
esac
