#!/usr/bin/env bash
# Run THERE, on the GPU machine (one H200, CUDA 13, python3 with PyTorch 2.11+cu130, CMake and
# ninja; no package registry), from the repository root, with .deb/ carried along
# (scripts/device_prepare.sh fills it here). Within 8 minutes in all:
#   1. record the environment (GPU, driver, nvcc, torch, disk);
#   2. unpack the Debian packages into a prefix with dpkg -x (nothing is installed system-wide);
#   3. configure quicksave with CUDA (sm_90 only, to build fast) against that prefix and the Python
#      install's CUDA LibTorch (-DQUICKSAVE_TORCH_PYTHON=$QS_PYTHON: no other torch flag needed);
#   4. build the GPU tests, the LibTorch CUDA test, the benchmark library and the stage/engine tests;
#   5. run the GPU tests (ctest -L gpu);
#   6. run the GPU benchmark (tests/gpu/gpu_bench.py: a 10 GiB bf16 state dict on the GPU, quicksave
#      against the pinned D2H floor and the Python baselines), with the time that is left;
#   7. with time still left, run the stage and engine tests on this CUDA build (registered pool).
# Every step is bounded by `timeout`; a failed step is recorded and the next ones still run where
# they can. Results go to $OUT (at most 8 files): summary.json, steps.log, env.txt, build.log,
# ctest.log, bench.log, gpu_bench.json. Exit status: 0 when every step passed.
#
# Environment: OUT (default out/device-check), QS_CHECK_BUDGET_S (default 465), QS_BUILD_DIR
# (default build-device), QS_DEPS_PREFIX (default /tmp/quicksave-deps), QS_PYTHON (default
# python3), QS_BENCH_GIB (default 10), QS_TORCH_PREFIX (extra CMAKE_PREFIX_PATH entry; torch itself comes from $QS_PYTHON).
# `--dry-run` (for checking this script on a machine without a GPU): same steps, the GPU tests
# skip themselves and the benchmark only reports that no GPU is present.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

START=$(date +%s)
BUDGET_S=${QS_CHECK_BUDGET_S:-465}
OUT=${OUT:-$PWD/out/device-check}
BUILD=${QS_BUILD_DIR:-build-device}
PREFIX=${QS_DEPS_PREFIX:-/tmp/quicksave-deps}
PY=${QS_PYTHON:-python3}
BENCH_GIB=${QS_BENCH_GIB:-10}
DRY_RUN=0
if [ "${1:-}" = --dry-run ]; then DRY_RUN=1; fi
mkdir -p "$OUT"
: >"$OUT/steps.log"

STEPS=()
FAILED=0

elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((BUDGET_S - $(elapsed))); }
log() { printf '[device_check %4ss] %s\n' "$(elapsed)" "$*" | tee -a "$OUT/steps.log"; }
# A log line made safe for a JSON string: no quotes, backslashes or control characters.
# shellcheck disable=SC1003  # the backslash is tr's argument, not an escape
clean() { printf '%s' "$*" | tr -d '"' | tr -d '\\' | tr '\n\t' '  ' | tr -cd '[:print:]'; }

write_summary() {
  local IFS=,
  printf '{"dry_run":%s,"elapsed_s":%s,"budget_s":%s,"failed_steps":%s,"steps":[%s]}\n' \
    "$DRY_RUN" "$(elapsed)" "$BUDGET_S" "$FAILED" "${STEPS[*]}" >"$OUT/summary.json"
}

# record NAME RC SECONDS NOTE
record() {
  STEPS+=("{\"step\":\"$1\",\"rc\":$2,\"seconds\":$3,\"note\":\"$(clean "$4")\"}")
  if [ "$2" -ne 0 ]; then FAILED=$((FAILED + 1)); fi
  write_summary
}

# run NAME LIMIT_S LOGFILE COMMAND...: runs COMMAND under `timeout`, output appended to LOGFILE.
run() {
  local name=$1 limit=$2 logfile=$3
  shift 3
  if [ "$limit" -le 5 ]; then
    log "$name: skipped, ${limit}s left"
    record "$name" 124 0 "skipped: out of time"
    return 124
  fi
  log "$name (limit ${limit}s)"
  local t0 rc
  t0=$(date +%s)
  echo "===== $name: $*" >>"$logfile"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" >>"$logfile" 2>&1
  rc=$?
  local took=$(($(date +%s) - t0))
  log "$name: rc=$rc in ${took}s"
  # The note: ctest's tally when the step ran tests, else the end of its output.
  local note
  note=$(grep -E "% tests passed" "$logfile" | tail -n 1)
  if [ -z "$note" ] || [ "$logfile" != "$OUT/ctest.log" ]; then note=$(tail -n 3 "$logfile"); fi
  record "$name" "$rc" "$took" "$note"
  return $rc
}

# Caps a log at its last 8 MiB (what comes back is limited to 16 MiB a file).
trim() { if [ -f "$1" ] && [ "$(stat -c %s "$1")" -gt 8388608 ]; then tail -c 8388608 "$1" >"$1.tmp" && mv "$1.tmp" "$1"; fi; }
finish() {
  for f in build.log ctest.log bench.log; do trim "$OUT/$f"; done
  write_summary
  log "done: $FAILED failed step(s), $(elapsed)s"
  [ "$FAILED" -eq 0 ]
  exit $?
}

# ---- 1. environment ---------------------------------------------------------------------------
NVCC=$(command -v nvcc || true)
if [ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc; fi
{
  echo "date: $(date -u)"
  echo "uname: $(uname -a)"
  echo "nproc: $(nproc)"
  free -g 2>/dev/null
  df -h . /tmp 2>/dev/null
  nvidia-smi 2>&1 | head -20
  echo "nvcc: ${NVCC:-none}"
  [ -n "$NVCC" ] && "$NVCC" --version
  cmake --version | head -1
  echo "ninja: $(ninja --version 2>&1)"
  echo "c++: $(c++ --version 2>&1 | head -1)"
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], sys.executable); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1
} >"$OUT/env.txt" 2>&1
log "environment recorded (env.txt)"

# ---- 2. the Debian packages -------------------------------------------------------------------
t0=$(date +%s)
debs=(.deb/*.deb)
if [ ! -f "${debs[0]}" ]; then
  record unpack 1 0 "no .deb/*.deb: run scripts/device_prepare.sh here and carry .deb"
  log "no .deb/ packages: cannot build"
  finish
fi
mkdir -p "$PREFIX"
unpack_rc=0
for deb in "${debs[@]}"; do
  if command -v dpkg >/dev/null; then
    dpkg -x "$deb" "$PREFIX" || unpack_rc=1
  else  # no dpkg: a .deb is an ar archive holding data.tar.*
    scratch=$(mktemp -d)
    (cd "$scratch" && ar x "$OLDPWD/$deb" && tar -xf data.tar.* -C "$PREFIX") || unpack_rc=1
    rm -rf "$scratch"
  fi
done
record unpack "$unpack_rc" $(($(date +%s) - t0)) "${#debs[@]} packages into $PREFIX"
log "unpacked ${#debs[@]} packages into $PREFIX (rc=$unpack_rc)"

MULTIARCH=x86_64-linux-gnu
# pkg-config for liburing: the machine's if it has one, else the unpacked pkgconf. The .pc files
# say /usr: the sysroot maps them into the prefix.
PKG_CONFIG_BIN=$(command -v pkg-config || true)
if [ -z "$PKG_CONFIG_BIN" ]; then
  PKG_CONFIG_BIN="$PREFIX/usr/bin/pkgconf"
  export LD_LIBRARY_PATH="$PREFIX/usr/lib/$MULTIARCH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export PKG_CONFIG_SYSROOT_DIR="$PREFIX"
export PKG_CONFIG_LIBDIR="$PREFIX/usr/lib/$MULTIARCH/pkgconfig:$PREFIX/usr/share/pkgconfig"
# Headers found without a CMake package (dlpack/dlpack.h) come from the prefix too.
export CPLUS_INCLUDE_PATH="$PREFIX/usr/include${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}"

# ---- 3. configure ---------------------------------------------------------------------------------
if [ -n "$NVCC" ]; then
  NVCC_DIR=$(dirname "$NVCC")
  export PATH="$NVCC_DIR:$PATH"
  export CUDACXX="$NVCC"
  CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$NVCC")")")}
  export CUDA_HOME
fi
# The wheel's LibTorch through QUICKSAVE_TORCH_PYTHON (cmake/QuicksaveTorch.cmake): its own
# libraries, CUDA runtime and NCCL, the GPU-probe-free arch list, refusal of a mixed LibTorch.
TORCH_PYTHON=$(command -v "$PY" || echo "$PY")
TORCH_PREFIX=${QS_TORCH_PREFIX:-}
log "torch of $TORCH_PYTHON: $("$PY" -c 'import torch; print(torch.__version__, torch.utils.cmake_prefix_path)' 2>&1 | tail -1); nvcc: ${NVCC:-none}; pkg-config: $PKG_CONFIG_BIN"
CUDA_MODE=ON
if [ -z "$NVCC" ]; then CUDA_MODE=AUTO; fi
: >"$OUT/build.log"
run configure $(($(left) < 150 ? $(left) : 150)) "$OUT/build.log" \
  cmake -S . -B "$BUILD" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release \
  -DQUICKSAVE_WITH_CUDA=$CUDA_MODE \
  -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DQUICKSAVE_BUILD_BENCHMARKS=OFF \
  -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
  "-DQUICKSAVE_TORCH_PYTHON=$TORCH_PYTHON" \
  "-DCMAKE_PREFIX_PATH=$PREFIX/usr${TORCH_PREFIX:+;$TORCH_PREFIX}" \
  "-DPKG_CONFIG_EXECUTABLE=$PKG_CONFIG_BIN"
configure_rc=$?
if [ $configure_rc -ne 0 ]; then finish; fi
grep -E "quicksave: CUDA|quicksave: LibTorch|Found Torch|Found GTest|Found Boost|Found nlohmann|liburing|Caffe2: CUDA|PyTorch: CUDA" "$OUT/build.log" |
  sed 's/^/  /' | tee -a "$OUT/steps.log" >/dev/null

# ---- 4. build ---------------------------------------------------------------------------------------
TARGETS=(gpu_kernel_math_tests quicksave_torch stage_tests engine_tests)
known=$(ninja -C "$BUILD" -t targets all 2>/dev/null)  # whole list first: grep -q would cut the pipe
for t in gpu_tests quicksave_gpu_bench gpu_torch_tests; do
  if grep -q "^$t:" <<<"$known"; then TARGETS+=("$t"); fi
done
log "targets: ${TARGETS[*]}"
build_limit=$(($(left) - 150))
if [ "$build_limit" -gt 330 ]; then build_limit=330; fi
run build "$build_limit" "$OUT/build.log" cmake --build "$BUILD" -j "$(nproc)" --target "${TARGETS[@]}"
build_rc=$?
if [ $build_rc -ne 0 ]; then finish; fi

# ---- 5. GPU tests -------------------------------------------------------------------------------------
: >"$OUT/ctest.log"
run gpu_tests $(($(left) < 200 ? $(left) - 60 : 140)) "$OUT/ctest.log" \
  ctest --test-dir "$BUILD" -L gpu --output-on-failure -j 8 --timeout 120
grep -E "tests passed|tests failed|Not Run|\*\*\*Skipped" "$OUT/ctest.log" | tail -5 | sed 's/^/  /' | tee -a "$OUT/steps.log" >/dev/null

# ---- 6. the benchmark ----------------------------------------------------------------------------------
BENCH_LIB=$(find "$BUILD" -name 'libquicksave_gpu_bench.so' -print -quit)
if [ -n "$BENCH_LIB" ]; then
  : >"$OUT/bench.log"
  bench_limit=$(($(left) - 15))
  export PYTHONUNBUFFERED=1
  run bench "$bench_limit" "$OUT/bench.log" \
    "$PY" tests/gpu/gpu_bench.py --lib "$BENCH_LIB" --out "$OUT/gpu_bench.json" --dir "$BUILD/bench-scratch" \
    --gib "$BENCH_GIB" --deadline $((START + BUDGET_S - 25))
  bench_rc=$?
  rm -rf "$BUILD/bench-scratch"
  # A dry run has no GPU: the benchmark is expected to stop at once, saying so.
  if [ "$DRY_RUN" -eq 1 ] && [ $bench_rc -ne 0 ] && grep -q "sees no CUDA device" "$OUT/gpu_bench.json" 2>/dev/null; then
    FAILED=$((FAILED - 1))
    record bench_dry_run 0 0 "no GPU here: the benchmark stopped as expected"
  fi
else
  record bench 1 0 "libquicksave_gpu_bench.so was not built"
fi

# ---- 7. stage and engine tests on this CUDA build, with what is left ------------------------------------
if [ "$(left)" -gt 60 ]; then
  run stage_engine_tests $(($(left) - 10)) "$OUT/ctest.log" \
    ctest --test-dir "$BUILD" -L 'stage|engine' --output-on-failure -j 8 --timeout 60
else
  record stage_engine_tests 0 0 "skipped: $(left)s left"
fi

finish
