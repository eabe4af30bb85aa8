# The dependencies, found by pkg-config, each only for what needs it:
#   libefps      OpenSSL's libcrypto, zlib, threads; rdma-core (libibverbs,
#                librdmacm) and hwloc (the progress thread's placement near
#                the device) with EFPS_WITH_VERBS
#   efps-info    hwloc with EFPS_WITH_HWLOC, rdma-core with verbs
#   efps-train   OpenBLAS              tests   cmocka
#   benchmarks   Google Benchmark (and a C++ compiler)
# A missing required one stops configuration with the Debian package that
# provides it.
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found: apt-get install pkg-config")
endif()
find_package(Threads REQUIRED)

function(efps_require prefix module debian_pkg)
  pkg_check_modules(${prefix} IMPORTED_TARGET ${module})
  if(NOT ${prefix}_FOUND)
    message(FATAL_ERROR
      "efps needs ${module} (pkg-config module '${module}' not found): "
      "apt-get install ${debian_pkg}")
  endif()
endfunction()

# An AUTO/ON/OFF option over pkg-config modules: sets ${result} to whether
# the feature is built. ON and not found stops with the packages to install.
function(efps_optional option result debian_pkgs)
  set(mode ${${option}})
  string(TOUPPER "${mode}" mode)
  if(NOT mode MATCHES "^(AUTO|ON|OFF|TRUE|FALSE|YES|NO|1|0)$")
    message(FATAL_ERROR "${option}=${${option}}: expected AUTO, ON or OFF")
  endif()
  set(found OFF)
  if(NOT mode MATCHES "^(OFF|FALSE|NO|0)$")
    set(found ON)
    foreach(pair ${ARGN}) # prefix=module
      string(REPLACE "=" ";" pm ${pair})
      list(GET pm 0 prefix)
      list(GET pm 1 module)
      pkg_check_modules(${prefix} IMPORTED_TARGET GLOBAL ${module})
      if(NOT ${prefix}_FOUND)
        set(found OFF)
      endif()
    endforeach()
    if(NOT found AND NOT mode STREQUAL "AUTO")
      message(FATAL_ERROR "${option}=ON but not found: apt-get install ${debian_pkgs}")
    endif()
  endif()
  message(STATUS "efps: ${option}=${${option}} -> ${found}")
  set(${result} ${found} PARENT_SCOPE)
endfunction()

efps_require(CRYPTO libcrypto libssl-dev)
efps_require(ZLIB zlib zlib1g-dev)
efps_optional(EFPS_WITH_VERBS EFPS_HAVE_VERBS "libibverbs-dev librdmacm-dev libhwloc-dev"
              IBVERBS=libibverbs RDMACM=librdmacm HWLOC=hwloc)
efps_optional(EFPS_WITH_HWLOC EFPS_HAVE_HWLOC "libhwloc-dev" HWLOC=hwloc)
if(EFPS_BUILD_APPS)
  efps_require(OPENBLAS openblas libopenblas-dev)
endif()
if(EFPS_BUILD_TESTS)
  efps_require(CMOCKA cmocka libcmocka-dev)
endif()
if(EFPS_BUILD_PERF)
  efps_require(BENCHMARK benchmark libbenchmark-dev)
endif()

# What libefps itself links (PRIVATE), as targets and as pkg-config modules
# for efps.pc's Requires.private.
set(EFPS_LIB_DEPS PkgConfig::CRYPTO PkgConfig::ZLIB)
set(EFPS_PC_REQUIRES_PRIVATE "libcrypto zlib")
set(EFPS_PC_TARGETS CRYPTO=libcrypto ZLIB=zlib) # for efpsConfig.cmake
if(EFPS_HAVE_VERBS)
  list(APPEND EFPS_LIB_DEPS PkgConfig::IBVERBS PkgConfig::RDMACM PkgConfig::HWLOC)
  string(APPEND EFPS_PC_REQUIRES_PRIVATE " libibverbs librdmacm hwloc")
  list(APPEND EFPS_PC_TARGETS IBVERBS=libibverbs RDMACM=librdmacm HWLOC=hwloc)
endif()
