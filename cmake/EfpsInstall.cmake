# cmake --install: headers (include/efps), libefps.so and libefps.a, the
# programs, efps.pc and the CMake package (efps::efps). The consumer test
# (tests/build/consumer.sh) installs into a temporary prefix and builds a
# program against it both ways.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS efps efps_static EXPORT efpsTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/efps ${PROJECT_BINARY_DIR}/include/efps
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")
foreach(program efps-server efps-sim efps-train efps-perf efps-info)
  if(TARGET ${program})
    install(TARGETS ${program} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
endforeach()

# efps.pc finds the prefix from its own place, so --prefix at install time works.
file(RELATIVE_PATH pc_to_prefix /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
set(EFPS_PC_PREFIX "\${pcfiledir}/${pc_to_prefix}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/efps.pc.in ${PROJECT_BINARY_DIR}/efps.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/efps.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

set(cmakedir ${CMAKE_INSTALL_LIBDIR}/cmake/efps)
install(EXPORT efpsTargets NAMESPACE efps:: DESTINATION ${cmakedir})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/efpsConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/efpsConfig.cmake
                              INSTALL_DESTINATION ${cmakedir})
# 0.x: minor versions may break the API, so only the same minor matches.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/efpsConfigVersion.cmake
                                  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/efpsConfig.cmake ${PROJECT_BINARY_DIR}/efpsConfigVersion.cmake
        DESTINATION ${cmakedir})
