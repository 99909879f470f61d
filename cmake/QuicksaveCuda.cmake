# QUICKSAVE_WITH_CUDA (AUTO | ON | OFF): whether the CUDA copier (src/stage/cuda_*.cpp) and the
# staging kernels (kernels/) are built. Sets QUICKSAVE_HAVE_CUDA (ON/OFF) for the rest of the build.
#   AUTO  on when nvcc and the CUDA runtime are found (and no sanitizer is on: ASan's shadow memory
#         and the CUDA driver's mappings collide, so the sanitizer presets build without CUDA);
#   ON    the same detection, but a missing toolkit is a configuration error;
#   OFF   nothing CUDA is looked for.
# Building the CUDA parts needs no GPU: this machine compiles and links them, and the GPU tests
# skip themselves at run time when no device is present.
#
# Included from the top-level CMakeLists.txt before the modules are added, so that the language
# is enabled and CMAKE_CUDA_ARCHITECTURES is set before any target exists (a LibTorch found later
# may override the variable in the top directory; the kernels' target keeps the value it was
# created with).

set(QUICKSAVE_HAVE_CUDA OFF)
string(TOUPPER "${QUICKSAVE_WITH_CUDA}" _qs_cuda_mode)
if(NOT _qs_cuda_mode MATCHES "^(AUTO|ON|OFF|TRUE|FALSE|YES|NO|1|0)$")
  message(FATAL_ERROR "QUICKSAVE_WITH_CUDA must be AUTO, ON or OFF, got '${QUICKSAVE_WITH_CUDA}'")
endif()
if(_qs_cuda_mode MATCHES "^(OFF|FALSE|NO|0)$")
  message(STATUS "quicksave: CUDA off (QUICKSAVE_WITH_CUDA=${QUICKSAVE_WITH_CUDA})")
  return()
endif()
set(_qs_cuda_required OFF)
if(_qs_cuda_mode MATCHES "^(ON|TRUE|YES|1)$")
  set(_qs_cuda_required ON)
endif()

macro(_qs_cuda_unavailable reason)
  if(_qs_cuda_required)
    message(FATAL_ERROR "quicksave: QUICKSAVE_WITH_CUDA=ON but ${reason}")
  endif()
  message(STATUS "quicksave: CUDA off (${reason})")
  return()
endmacro()

if(QUICKSAVE_SANITIZE AND NOT _qs_cuda_required)
  _qs_cuda_unavailable("sanitizers are on (QUICKSAVE_SANITIZE=${QUICKSAVE_SANITIZE})")
endif()

# nvcc is often not on PATH (/usr/local/cuda/bin is not a default search path). CMake's own
# detection honours the CUDACXX environment variable, also in check_language's test project, so
# point it at the toolkit's compiler unless the caller chose one.
if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
  find_program(QUICKSAVE_NVCC nvcc
    HINTS ENV CUDA_HOME ENV CUDA_PATH ENV CUDAToolkit_ROOT ${CUDAToolkit_ROOT}
    PATH_SUFFIXES bin
    PATHS /usr/local/cuda /opt/cuda
    DOC "nvcc used to build quicksave's CUDA parts")
  if(QUICKSAVE_NVCC)
    set(ENV{CUDACXX} "${QUICKSAVE_NVCC}")
  endif()
endif()

# Architectures: Turing (T4) through Blackwell, with Hopper (H100/H200, sm_90) native, plus PTX of
# the newest so that later GPUs can JIT the kernels. CUDA 13 no longer targets anything older than
# sm_75. Override with -DCMAKE_CUDA_ARCHITECTURES=90 (or "native") for a faster build.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
  set(CMAKE_CUDA_ARCHITECTURES "75-real;80-real;86-real;89-real;90-real;100-real;120" CACHE STRING
      "CUDA architectures of quicksave's kernels")
endif()

include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  _qs_cuda_unavailable("no working CUDA compiler (nvcc) was found; set CUDACXX or CMAKE_CUDA_COMPILER")
endif()
enable_language(CUDA)

# The toolkit of that compiler (headers and the runtime library).
if(NOT DEFINED CUDAToolkit_ROOT AND NOT DEFINED ENV{CUDAToolkit_ROOT})
  get_filename_component(_qs_nvcc_dir "${CMAKE_CUDA_COMPILER}" DIRECTORY)
  get_filename_component(CUDAToolkit_ROOT "${_qs_nvcc_dir}/.." ABSOLUTE)
endif()
find_package(CUDAToolkit)
if(NOT CUDAToolkit_FOUND OR NOT TARGET CUDA::cudart)
  _qs_cuda_unavailable("the CUDA runtime (libcudart) was not found next to ${CMAKE_CUDA_COMPILER}")
endif()

set(QUICKSAVE_HAVE_CUDA ON)
message(STATUS "quicksave: CUDA ${CUDAToolkit_VERSION} (${CMAKE_CUDA_COMPILER}), architectures ${CMAKE_CUDA_ARCHITECTURES}")
