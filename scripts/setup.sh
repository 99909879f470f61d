#!/usr/bin/env bash
# Installs what quicksave needs to build and test, and nothing that is already there.
#   1. Debian packages: only the missing ones; `apt-get update` at most once per run.
#   2. The Python test virtual environment (.venv, with Debian's site packages visible so that
#      python3-torch is importable) with pinned reference libraries, created once and reused.
# Safe to run repeatedly; `make test` and `make demo` run it first.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev libgloo-dev liburing-dev libboost-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev libdlpack-dev
  pybind11-dev python3-dev python3-venv python3-pip python3-torch python3-numpy python3-pytest
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: Debian packages present"
fi

# Test oracles only (never library dependencies): the real reference implementations.
VENV=.venv
# The reference versions of shared/reference/hf_serialization_spec.md (huggingface_hub 1.29, the
# safetensors of its snapshot); both run with Debian's torch 1.13.
PY_PINS=(safetensors==0.7.0 huggingface_hub==1.29.0)
stamp="$VENV/.quicksave-pins"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${PY_PINS[*]}" ]; then
  echo "setup: creating $VENV with ${PY_PINS[*]}"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
  # The parity tests need them: a failure here stops `make test` rather than skipping tests.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_PINS[@]}"
  echo "${PY_PINS[*]}" >"$stamp"
fi
