# `cmake --install build --prefix P` installs the libraries, headers and the CLI, plus a package
# config, so another CMake project can `find_package(Strata)` and link `strata::run` (and so on).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

get_property(strata_libs GLOBAL PROPERTY STRATA_INSTALLED_LIBRARIES)
install(TARGETS ${strata_libs} EXPORT StrataTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION include/strata)
install(TARGETS strata RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
foreach(folder ${STRATA_LIBRARIES})
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${folder}/ DESTINATION include/strata/${folder}
          FILES_MATCHING PATTERN "*.h")
endforeach()
install(EXPORT StrataTargets NAMESPACE strata:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/Strata)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/StrataConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/StrataConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/Strata)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/StrataConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/StrataConfig.cmake ${PROJECT_BINARY_DIR}/StrataConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/Strata)
