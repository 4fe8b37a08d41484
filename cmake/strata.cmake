# Helpers shared by every folder's CMakeLists.txt.

function(strata_common_flags target)
  target_compile_features(${target} PUBLIC cxx_std_17)
  target_compile_options(${target} PRIVATE -Wall -Wno-unused-parameter)
  # Sources include "folder/file.h" from the repository root; installed headers live in include/strata.
  target_include_directories(${target} PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
                                              $<INSTALL_INTERFACE:include/strata>)
endfunction()

# strata_add_library(NAME SOURCES a.cpp b.cpp DEPS other_lib ...)
# One folder = one namespace = one static library, strata_<folder>, exported as strata::<folder>.
function(strata_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(strata_${name} STATIC ${ARG_SOURCES})
  add_library(strata::${name} ALIAS strata_${name})
  set_target_properties(strata_${name} PROPERTIES EXPORT_NAME ${name})
  strata_common_flags(strata_${name})
  target_link_libraries(strata_${name} PUBLIC ${ARG_DEPS} ${TORCH_LIBRARIES})
  target_precompile_headers(strata_${name} REUSE_FROM strata_pch)
  set_property(GLOBAL APPEND PROPERTY STRATA_INSTALLED_LIBRARIES strata_${name})
endfunction()

function(strata_add_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  strata_common_flags(${name})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} ${TORCH_LIBRARIES})
  target_precompile_headers(${name} REUSE_FROM strata_pch)
endfunction()

# STRATA_SANITIZE / STRATA_FUZZ: global compile and link options for every target of this build.
# LibTorch, HDF5 and OpenBLAS are not instrumented; scripts/sanitizers/ holds the run-time options.
macro(strata_sanitizer_flags)
  if(STRATA_FUZZ)
    if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
      message(FATAL_ERROR "STRATA_FUZZ=ON needs clang (libFuzzer): configure with -DCMAKE_CXX_COMPILER=clang++")
    endif()
    # fuzzer-no-link: coverage instrumentation everywhere; only the fuzz targets link libFuzzer's main.
    add_compile_options(-fsanitize=address,undefined,fuzzer-no-link -fno-omit-frame-pointer -g)
    add_link_options(-fsanitize=address,undefined)
  elseif(STRATA_SANITIZE)
    add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -g1)
    add_link_options(-fsanitize=address,undefined)
  endif()
endmacro()
