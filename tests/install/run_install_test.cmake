# Installs the build tree into a fresh prefix, then configures, builds and runs the downstream
# project in this folder against it with find_package(quicksave).
file(REMOVE_RECURSE "${WORK_DIR}")
execute_process(COMMAND ${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix"
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(rc)
  message(FATAL_ERROR "install failed: ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}" -B "${WORK_DIR}/build" -G Ninja
                        "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix" "-DWITH_TORCH=${WITH_TORCH}"
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the downstream project failed: ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build "${WORK_DIR}/build" RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the downstream project failed: ${rc}")
endif()
execute_process(COMMAND "${WORK_DIR}/build/downstream" "${WORK_DIR}/out" RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "the downstream program failed: ${rc}")
endif()
if(WITH_TORCH AND EXISTS "${WORK_DIR}/build/downstream_torch")
  execute_process(COMMAND "${WORK_DIR}/build/downstream_torch" "${WORK_DIR}/out_torch" RESULT_VARIABLE rc)
  if(rc)
    message(FATAL_ERROR "the downstream torch program failed: ${rc}")
  endif()
endif()
