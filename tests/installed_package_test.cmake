# Installs the build into a scratch prefix, then configures, builds and runs examples/ against it
# through find_package(Strata): what a C++ project that uses Strata does.
set(work ${STRATA_BUILD_DIR}/installed-package-test)
file(REMOVE_RECURSE ${work})
function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()
step(${CMAKE_COMMAND} --install ${STRATA_BUILD_DIR} --prefix ${work}/prefix)
step(${CMAKE_COMMAND} -S ${STRATA_SOURCE_DIR}/examples -B ${work}/build -G Ninja -DCMAKE_BUILD_TYPE=Release
     -DCMAKE_PREFIX_PATH=${work}/prefix)
step(${CMAKE_COMMAND} --build ${work}/build)
step(${work}/build/custom_method --out ${work}/runs)
message(STATUS "installed package: examples built and ran against ${work}/prefix")
