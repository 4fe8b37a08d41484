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
