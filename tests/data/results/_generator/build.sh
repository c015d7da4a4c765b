#!/bin/sh
# Build the reference printer: libcni's own result types (Debian's
# golang-github-containernetworking-cni-dev, libcni 1.1.x source) brought to libcni >= 1.2
# behaviour by patch_libcni.py (1.1.0 results, the 1.1 interface/route fields, 1.x output
# marshalled through a map so keys come out sorted and an empty dns is dropped).
# Usage: build.sh OUTDIR   -> OUTDIR/emu
set -eu
out=$(cd "${1:?usage: build.sh OUTDIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
src=/usr/share/gocode/src/github.com/containernetworking/cni
[ -d "$src" ] || { echo "apt-get install golang-github-containernetworking-cni-dev" >&2; exit 1; }
rm -rf "$out/gopath"
mkdir -p "$out/gopath/src/github.com/containernetworking" "$out/gopath/src/emu"
cp -r "$src" "$out/gopath/src/github.com/containernetworking/cni"
python3 "$here/patch_libcni.py" "$out/gopath/src/github.com/containernetworking/cni/pkg/types"
cp "$here/main.go" "$out/gopath/src/emu/"
cd "$out/gopath" && GOPATH="$out/gopath" GO111MODULE=off GOFLAGS= go build -o "$out/emu" emu
