# Sourced (POSIX sh) with GOTEL_ROOT set to the repository: the Go toolchains of
# tools/go-toolchains.txt.
#   go_toolchains            every listed path, default first
#   go_toolchain VERSION     the listed path of VERSION (e.g. 1.27)
#   go_installs KIND         the install column of rows of that kind (apt, toolchain), without "KIND:"
#   go_path_of INSTALL       the listed path of the row installed that way (e.g. toolchain:go1.27.3)
#   default_go               $GO, else the default (first) toolchain, else the newest listed one
#                            installed, else `go` on PATH; fails when there is none
GO_TOOLCHAINS_TXT="$GOTEL_ROOT/tools/go-toolchains.txt"
go_toolchains() { awk '!/^#/ && NF >= 2 { print $2 }' "$GO_TOOLCHAINS_TXT"; }
go_toolchain() { awk -v v="$1" '!/^#/ && $1 == v { print $2 }' "$GO_TOOLCHAINS_TXT"; }
go_installs() { awk -v k="$1:" '!/^#/ && index($3, k) == 1 { print substr($3, length(k) + 1) }' "$GO_TOOLCHAINS_TXT"; }
go_path_of() { awk -v k="$1" '!/^#/ && $3 == k { print $2 }' "$GO_TOOLCHAINS_TXT"; }
default_go() {
  if [ -n "${GO:-}" ]; then echo "$GO"; return 0; fi
  for g in $(go_toolchains | head -1) $(awk '!/^#/ && NF >= 2 { print $1, $2 }' "$GO_TOOLCHAINS_TXT" | sort -rV | cut -d' ' -f2); do
    if [ -x "$g" ]; then echo "$g"; return 0; fi
  done
  command -v go
}
