# Every real dependency of efps, found by pkg-config. A missing one stops
# configuration with the Debian package that provides it.
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

efps_require(IBVERBS  libibverbs libibverbs-dev)
efps_require(RDMACM   librdmacm  librdmacm-dev)
efps_require(HWLOC    hwloc      libhwloc-dev)
efps_require(OPENBLAS openblas   libopenblas-dev)
efps_require(CMOCKA   cmocka     libcmocka-dev)
efps_require(BENCHMARK benchmark libbenchmark-dev)
efps_require(CRYPTO   libcrypto  libssl-dev)
efps_require(ZLIB     zlib       zlib1g-dev)

# What libefps itself links; tests and programs add cmocka, benchmark, BLAS.
set(EFPS_LIB_DEPS PkgConfig::IBVERBS PkgConfig::RDMACM PkgConfig::HWLOC
    PkgConfig::CRYPTO PkgConfig::ZLIB)
