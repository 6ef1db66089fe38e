#!/usr/bin/env bash
# Build the one-file `fastpaca` binary with PyInstaller into dist/fastpaca,
# then smoke-test it: `fastpaca version` must run from a directory with no
# access to the source tree or the virtualenv. packaging/smoke.py (run by
# `make package` after this) checks the whole product inside the binary.
set -euo pipefail
SECONDS=0
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="${VENV:-.venv}"
"$venv/bin/pip" install --quiet -e '.[package]'
cd packaging
"$root/$venv/bin/pyinstaller" --noconfirm --clean \
  --distpath "$root/dist" --workpath "$root/build/pyinstaller" fastpaca.spec
empty="$(mktemp -d)"
trap 'rm -rf "$empty"' EXIT
cd "$empty"
env -i PATH=/usr/bin:/bin "$root/dist/fastpaca" version
echo "built $root/dist/fastpaca ($(du -h "$root/dist/fastpaca" | cut -f1)) in ${SECONDS} s"
