# Helpers shared by every folder's CMakeLists.txt.

function(strata_common_flags target)
  target_compile_features(${target} PUBLIC cxx_std_17)
  target_compile_options(${target} PRIVATE ${TORCH_CXX_FLAGS_LIST} -Wall -Wno-unused-parameter)
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
  if(STRATA_HAVE_CUDA)
    target_compile_definitions(${target} PUBLIC STRATA_HAVE_CUDA=1)
  endif()
endfunction()

# strata_add_library(NAME SOURCES a.cpp b.cpp DEPS other_lib ...)
# One folder = one namespace = one static library, named strata_<folder>.
function(strata_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(strata_${name} STATIC ${ARG_SOURCES})
  strata_common_flags(strata_${name})
  target_link_libraries(strata_${name} PUBLIC ${ARG_DEPS} ${TORCH_LIBRARIES})
  target_precompile_headers(strata_${name} REUSE_FROM strata_pch)
endfunction()

function(strata_add_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  strata_common_flags(${name})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} ${TORCH_LIBRARIES})
  target_precompile_headers(${name} REUSE_FROM strata_pch)
endfunction()
