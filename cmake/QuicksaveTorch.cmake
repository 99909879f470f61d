# Which LibTorch quicksave's torch-facing targets (quicksave_torch, dist, the Python module and
# their tests) build against: DESIGN.md §6's two torch lines.
#
#   QUICKSAVE_TORCH_PYTHON unset  the system LibTorch (Debian's libtorch-dev, /usr/bin/python3's
#                                 python3-torch for the Python module);
#   QUICKSAVE_TORCH_PYTHON=PY     the LibTorch inside interpreter PY's torch package (a PyPI
#                                 wheel, normally CUDA-enabled); the Python module is built for PY.
#                                 `pip install .` sets it to the interpreter installed into.
#
# Two parts, because of what must happen before and after find_package(Torch):
#   include(QuicksaveTorch)          before QuicksaveCuda: points CMake at the wheel's libraries
#                                    (CUDA runtime included) so nothing else is found first;
#   quicksave_check_torch_line()     after find_package(Torch): refuses a mixed LibTorch.
#
# What goes wrong without this, with the README's `CMAKE_PREFIX_PATH=<wheel>` alone:
#   1. TorchConfig's find_library(c10 PATHS <wheel>/lib) searches the system folders first, so
#      Debian's /usr/lib/x86_64-linux-gnu/libc10.so is linked beside the wheel's libtorch (two
#      c10s in one process: heap corruption at exit). The wheel's own files are put in those
#      cache variables first.
#   2. Caffe2's CUDA setup runs select_compute_arch, which try_runs a GPU probe (fails without a
#      GPU) unless TORCH_CUDA_ARCH_LIST is set; and it sets CMAKE_CUDA_STANDARD to the C++
#      standard (20), which CMake 3.25 does not know for nvcc ("CUDA20 ... not supported").
#   3. CUDA::cudart from /usr/local/cuda puts the toolkit's lib folder on the link rpath; ld then
#      resolves libtorch_cuda's libnccl.so.2 to the toolkit's older NCCL (undefined ncclCommGrow,
#      ...) before the wheel's RPATH. The wheel's nvidia/*/lib folders are seeded as the CUDA
#      libraries and given to the linker as -rpath-link.

option(QUICKSAVE_TORCH_PCH "Precompile LibTorch's headers for the targets with several LibTorch files" ON)
set(QUICKSAVE_TORCH_PYTHON "" CACHE FILEPATH
    "A Python whose torch package supplies LibTorch (the PyPI wheel line); empty: the system LibTorch")
# After find_package(Torch): every LibTorch library (and, for the wheel, its CUDA runtime and
# NCCL) must come from the one install; otherwise stop with the culprits named.
function(quicksave_check_torch_line)
  if(NOT TORCH_LIBRARY)
    message(FATAL_ERROR "quicksave: find_package(Torch) gave no TORCH_LIBRARY")
  endif()
  get_filename_component(torch_lib_dir "${TORCH_LIBRARY}" REALPATH)
  get_filename_component(torch_lib_dir "${torch_lib_dir}" DIRECTORY)
  # Every library file the torch targets bring, following imported targets.
  set(pending ${TORCH_LIBRARIES} torch torch_library c10 torch_cpu torch_cuda c10_cuda)
  set(seen "")
  set(files "")
  while(pending)
    list(POP_FRONT pending item)
    if(item IN_LIST seen)
      continue()
    endif()
    list(APPEND seen "${item}")
    if(TARGET "${item}")
      get_target_property(type "${item}" TYPE)
      if(NOT type STREQUAL "INTERFACE_LIBRARY")
        foreach(prop IMPORTED_LOCATION IMPORTED_LOCATION_RELEASE IMPORTED_LOCATION_RELWITHDEBINFO IMPORTED_LOCATION_NOCONFIG)
          get_target_property(location "${item}" ${prop})
          if(location)
            list(APPEND files "${location}")
          endif()
        endforeach()
      endif()
      get_target_property(deps "${item}" INTERFACE_LINK_LIBRARIES)
      if(deps)
        list(APPEND pending ${deps})
      endif()
    elseif(IS_ABSOLUTE "${item}")
      list(APPEND files "${item}")
    endif()
  endwhile()
  set(bad "")
  foreach(file IN LISTS files)
    get_filename_component(name "${file}" NAME)
    get_filename_component(real "${file}" REALPATH)
    get_filename_component(dir "${real}" DIRECTORY)
    if(name MATCHES "^lib(c10|torch|caffe2|shm|kineto)[a-z0-9_]*\\.(so|a)" AND NOT dir STREQUAL torch_lib_dir)
      list(APPEND bad "${file}")
    elseif(QUICKSAVE_TORCH_LINE STREQUAL "wheel" AND name MATCHES "^lib(cudart|nccl|cublas|nvrtc)[.]")
      # The wheel's CUDA libraries live beside torch in site-packages (nvidia/*/lib).
      get_filename_component(site "${QUICKSAVE_TORCH_ROOT}" DIRECTORY)
      cmake_path(IS_PREFIX site "${real}" NORMALIZE inside)
      if(NOT inside)
        list(APPEND bad "${file}")
      endif()
    endif()
  endforeach()
  if(bad)
    list(JOIN bad "\n    " bad_text)
    message(FATAL_ERROR
      "quicksave: mixed LibTorch refused. The torch found is ${TORCH_LIBRARY}, but these libraries "
      "come from another install:\n    ${bad_text}\n"
      "Two torch installs in one binary corrupt memory at run time. Build the system line with a "
      "fresh build folder and no CMAKE_PREFIX_PATH/Torch_DIR, or the wheel line with "
      "-DQUICKSAVE_TORCH_PYTHON=<venv>/bin/python (preset torch-wheel) in its own build folder.")
  endif()
  set(QUICKSAVE_TORCH_LIB_DIR "${torch_lib_dir}" PARENT_SCOPE)  # tests/torch/check_torch_line.py
  if(QUICKSAVE_TORCH_LINE STREQUAL "wheel")
    # ld resolves libtorch_cuda's own dependencies (libnccl.so.2, ...) through these first.
    set(link_dirs "${torch_lib_dir}" ${QUICKSAVE_TORCH_CUDA_LIB_DIRS})
    list(JOIN link_dirs ":" link_path)
    set_property(TARGET torch APPEND PROPERTY INTERFACE_LINK_OPTIONS "LINKER:-rpath-link,${link_path}")
  endif()
  list(LENGTH files checked)
  message(STATUS "quicksave: LibTorch ${Torch_VERSION} from ${torch_lib_dir} (${QUICKSAVE_TORCH_LINE} line; ${checked} library files checked)")
endfunction()

# `pip install .` (scikit-build-core, pyproject.toml): the interpreter being installed into.
if(SKBUILD AND NOT QUICKSAVE_TORCH_PYTHON AND Python_EXECUTABLE)
  set(QUICKSAVE_TORCH_PYTHON "${Python_EXECUTABLE}" CACHE FILEPATH "" FORCE)
endif()
option(QUICKSAVE_EXPECT_TORCH_WHEEL "Fail unless QUICKSAVE_TORCH_PYTHON is given (set by preset torch-wheel)" OFF)
set(QUICKSAVE_TORCH_LINE "system")
# The interpreter of the test oracles (huggingface_hub, safetensors, transformers) of this line:
# the project's .venv over Debian's torch, or the wheel's own virtual environment.
set(QUICKSAVE_ORACLE_PYTHON "${PROJECT_SOURCE_DIR}/.venv/bin/python")
if(QUICKSAVE_EXPECT_TORCH_WHEEL AND NOT QUICKSAVE_TORCH_PYTHON)
  message(FATAL_ERROR "The torch-wheel preset needs the wheel's interpreter: run scripts/setup.sh, then "
                      "QUICKSAVE_WHEEL_PYTHON=$(scripts/setup.sh --print-wheel-venv)/bin/python cmake --preset torch-wheel "
                      "(or -DQUICKSAVE_TORCH_PYTHON=...)")
endif()
if(NOT QUICKSAVE_TORCH_PYTHON OR NOT QUICKSAVE_WITH_TORCH)
  return()
endif()
set(QUICKSAVE_ORACLE_PYTHON "${QUICKSAVE_TORCH_PYTHON}")
if(NOT EXISTS "${QUICKSAVE_TORCH_PYTHON}")
  message(FATAL_ERROR "QUICKSAVE_TORCH_PYTHON=${QUICKSAVE_TORCH_PYTHON} does not exist "
                      "(scripts/setup.sh creates the wheel's virtual environment; `make test` passes its python)")
endif()
# -I (isolated mode): the interpreter's own site-packages, never PYTHONPATH; pip's build
# isolation hides the target environment's packages through it.
execute_process(
  COMMAND "${QUICKSAVE_TORCH_PYTHON}" -I -c [=[
import os, sys, torch
site = os.path.dirname(os.path.dirname(torch.__file__))
print(torch.utils.cmake_prefix_path)
print(os.path.dirname(torch.__file__))
print(torch.__version__)
print(torch.version.cuda or "")
print(site)
try:
    import pybind11
    print(pybind11.get_cmake_dir())
except ImportError:
    print("")
]=]
  OUTPUT_VARIABLE _qs_torch_info ERROR_VARIABLE _qs_torch_err RESULT_VARIABLE _qs_torch_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(_qs_torch_rc)
  message(FATAL_ERROR "QUICKSAVE_TORCH_PYTHON=${QUICKSAVE_TORCH_PYTHON} cannot import torch:\n${_qs_torch_err}")
endif()
string(REPLACE "\n" ";" _qs_torch_info "${_qs_torch_info}")
list(GET _qs_torch_info 0 _qs_torch_cmake_prefix)
list(GET _qs_torch_info 1 QUICKSAVE_TORCH_ROOT)
list(GET _qs_torch_info 2 QUICKSAVE_TORCH_VERSION)
list(GET _qs_torch_info 3 _qs_torch_cuda)
list(GET _qs_torch_info 4 _qs_site)
list(LENGTH _qs_torch_info _qs_n)
set(_qs_pybind11_dir "")
if(_qs_n GREATER 5)
  list(GET _qs_torch_info 5 _qs_pybind11_dir)
endif()
set(QUICKSAVE_TORCH_LINE "wheel")
message(STATUS "quicksave: torch ${QUICKSAVE_TORCH_VERSION} of ${QUICKSAVE_TORCH_PYTHON} (${QUICKSAVE_TORCH_ROOT}), CUDA ${_qs_torch_cuda}")

set(Torch_DIR "${_qs_torch_cmake_prefix}/Torch" CACHE PATH "" FORCE)
list(PREPEND CMAKE_PREFIX_PATH "${_qs_torch_cmake_prefix}")
# 1. The wheel's own files for TorchConfig's find_library calls (NO_DEFAULT_PATH: never /usr/lib).
foreach(_qs_pair "c10_LIBRARY;c10" "TORCH_LIBRARY;torch" "C10_CUDA_LIBRARY;c10_cuda" "kineto_LIBRARY;kineto")
  list(GET _qs_pair 0 _qs_var)
  list(GET _qs_pair 1 _qs_name)
  find_library(${_qs_var} ${_qs_name} PATHS "${QUICKSAVE_TORCH_ROOT}/lib" NO_DEFAULT_PATH)
endforeach()
# The Python module: this interpreter, and the pybind11 its torch was built with (pybind11 3 in
# torch/include shadows Debian's 2.10 headers; a matching pybind11 CMake package keeps them one).
set(QUICKSAVE_PYTHON_EXECUTABLE "${QUICKSAVE_TORCH_PYTHON}" CACHE FILEPATH "" FORCE)
if(_qs_pybind11_dir AND NOT pybind11_DIR)
  set(pybind11_DIR "${_qs_pybind11_dir}" CACHE PATH "" FORCE)
endif()

# The wheel's CUDA libraries (nvidia/<package>/lib, beside torch in site-packages).
file(GLOB QUICKSAVE_TORCH_CUDA_LIB_DIRS LIST_DIRECTORIES true "${_qs_site}/nvidia/*/lib")
if(_qs_torch_cuda)
  # 2. No GPU probe; the architectures of the wheel's own kernels (they only feed Caffe2's legacy
  #    CUDA_NVCC_FLAGS; quicksave's kernels use CMAKE_CUDA_ARCHITECTURES).
  if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(TORCH_CUDA_ARCH_LIST "7.5;8.0;8.6;9.0;10.0;12.0+PTX" CACHE STRING "CUDA architectures for Caffe2's CUDA flags")
  endif()
  if(NOT CMAKE_CUDA_STANDARD)
    set(CMAKE_CUDA_STANDARD 17)  # Caffe2 would copy CMAKE_CXX_STANDARD (20): see 2. above
  endif()
  # 3. CUDA::<lib> (CMake's and Caffe2's FindCUDAToolkit share these cache variables) = the wheel's.
  foreach(_qs_dir IN LISTS QUICKSAVE_TORCH_CUDA_LIB_DIRS)
    file(GLOB _qs_libs "${_qs_dir}/lib*.so.*")
    foreach(_qs_lib IN LISTS _qs_libs)
      get_filename_component(_qs_file "${_qs_lib}" NAME)
      if(_qs_file MATCHES "^lib([A-Za-z0-9_]+)\\.so\\.[0-9]+$")
        set(_qs_name "${CMAKE_MATCH_1}")
        if(_qs_name STREQUAL "cufile")
          set(_qs_name cuFile)
        elseif(_qs_name STREQUAL "cufile_rdma")
          set(_qs_name cuFile_rdma)
        endif()
        if(NOT CUDA_${_qs_name}_LIBRARY)
          set(CUDA_${_qs_name}_LIBRARY "${_qs_lib}" CACHE FILEPATH "the torch wheel's ${_qs_file}")
        endif()
      endif()
    endforeach()
  endforeach()
endif()
