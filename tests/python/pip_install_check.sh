#!/usr/bin/env bash
# `pip install .` as the README says, into a fresh virtual environment whose torch is the wheel
# line's (a .pth file points at the wheel venv's site-packages, so no torch is downloaded again;
# pip's isolated build fetches only scikit-build-core and pybind11), then the Python suites run
# against the INSTALLED package: no PYTHONPATH, run from outside the source and build trees, and
# quicksave.__file__ must lie in the fresh environment.
#   pip_install_check.sh SOURCE_DIR WORK_DIR WHEEL_PYTHON CPP_WRITER
set -euo pipefail
src=$1 work=$2 wheel_python=$3 cpp_writer=$4
rm -rf "$work/venv" "$work/run"
mkdir -p "$work/run"
start=$SECONDS
# The wheel venv's own base interpreter, so that its site-packages (and torch's ABI) fit.
base=$("$wheel_python" -c 'import sys; print(sys._base_executable)')
"$base" -m venv "$work/venv"
py=$work/venv/bin/python
site=$("$py" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
"$wheel_python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))' >"$site/_quicksave_test_wheel_torch.pth"
# The build folder is kept between runs (incremental here; a fresh clone builds it once). The long
# option: the pip of a Debian 12 venv (23.0) has no `-C`.
env -u PYTHONPATH "$py" -m pip install --disable-pip-version-check -q \
  --config-settings=build-dir="$work/build" "$src"
echo "pip install: $((SECONDS - start)) s"
cd "$work/run"
env -u PYTHONPATH "$py" -c '
import os, sys, quicksave, torch
site = sys.argv[1]
assert os.path.realpath(quicksave.__file__).startswith(os.path.realpath(site)), quicksave.__file__
print("quicksave", quicksave.__version__, "from", os.path.dirname(quicksave.__file__), "torch", torch.__version__)
' "$site"
suites=(test_golden_save_load.py test_golden_split.py test_checkpointer.py test_errors.py test_tensor_subclasses.py test_cuda_streams.py)
env -u PYTHONPATH PYTHONDONTWRITEBYTECODE=1 QUICKSAVE_TEST_DATA_DIR="$src/tests/data" QUICKSAVE_CPP_WRITER="$cpp_writer" \
  "$py" -m pytest -q -p no:cacheprovider "${suites[@]/#/$src/tests/python/}"
