#!/usr/bin/env bash
# The demo from a fresh machine: set everything up (packages, venv, frozen build), then run
# `cni-bridge demo`, which wires the default network in throwaway namespaces and removes them.
# Needs root (namespaces). Arguments are passed to `cni-bridge demo`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/tests/setup.sh"
exec "$REPO/dist/cni/cni-bridge" demo "$@"
