#!/usr/bin/env bash
# Installs what quicksave needs to build and test, and nothing that is already there.
#   1. Debian packages: only the missing ones; `apt-get update` at most once per run.
#   2. The Python test virtual environment (.venv, with Debian's site packages visible so that
#      python3-torch is importable) with pinned reference libraries, created once and reused.
#   3. The second torch line: the PyPI torch wheel and the real clients in a virtual environment
#      outside the repository (shared by every clone on the machine), created once and reused.
# Safe to run repeatedly; `make test` and `make demo` run it first.
set -euo pipefail
cd "$(dirname "$0")/.."

# The second torch line's pins and virtual environment (section 3 below).
WHEEL_PINS=(torch==2.15.0 transformers==5.23.0 huggingface_hub==2.4.0 safetensors==0.8.0
            numpy==2.3.5 pytest==9.2.0 scikit-build-core==1.1.2 pybind11==3.1.0)
WHEEL_TORCH=${WHEEL_PINS[0]#torch==}
WHEEL_VENV=${QUICKSAVE_WHEEL_VENV:-${QUICKSAVE_CACHE:-$HOME/.cache/quicksave}/venv-torch-$WHEEL_TORCH}
if [ "${1:-}" = --print-wheel-venv ]; then echo "$WHEEL_VENV"; exit 0; fi

DEB_PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev libgloo-dev liburing-dev libboost-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev libdlpack-dev libxxhash-dev fio strace util-linux
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

# 3. The second torch line (DESIGN.md §6): the newest PyTorch wheel from PyPI (a CUDA build; it
#    imports and runs without a GPU) with the real clients (transformers, the newest
#    huggingface_hub) in a virtual environment OUTSIDE the repository, so that every clone on this
#    machine (CI clones afresh) reuses it: it is several GB. Its own interpreter, no system site
#    packages: Debian's torch 1.13 must never be importable there. Created once; the stamp holds
#    the pins, a change of pins makes a new folder (the old one stays until removed by hand).
#    `scripts/setup.sh --print-wheel-venv` prints its path (the Makefile asks).
wheel_stamp="$WHEEL_VENV/.quicksave-pins"
if [ ! -f "$wheel_stamp" ] || [ "$(cat "$wheel_stamp")" != "${WHEEL_PINS[*]}" ]; then
  echo "setup: creating $WHEEL_VENV with ${WHEEL_PINS[*]} (a few GB, once per machine)"
  start=$SECONDS
  mkdir -p "$(dirname "$WHEEL_VENV")"
  # Debian's python 3.11: a version the wheels support, and python3-dev's headers match it.
  /usr/bin/python3 -m venv --clear "$WHEEL_VENV"
  "$WHEEL_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir "${WHEEL_PINS[@]}"
  echo "${WHEEL_PINS[*]}" >"$wheel_stamp"
  echo "setup: $WHEEL_VENV ready in $((SECONDS - start)) s"
fi
