# cmake -DFLAGS=<layering_flags.cmake> -DTMP=<dir> -P layering.cmake
#
# The layering of DESIGN.md, checked with the compiler and the include paths
# each layer's object library really has (FLAGS is generated from the
# targets: EFPS_LAYER_DIRS bottom up, EFPS_INCLUDES_<layer>, EFPS_CC,
# EFPS_SOURCE_DIR, EFPS_HAVE_VERBS). For every layer L:
#   1. its include path holds include/ and its own folder, never the
#      repository root or another layer's folder;
#   2. "efps/efps.h" and each of L's own headers resolve with it (the probe
#      works, so a failure below is the layering and nothing else);
#   3. every internal header of every higher layer H does not resolve, neither
#      by its name inside H ("ps_int.h") nor from the root ("lib/ps/ps_int.h");
#   4. no source of L reaches out of its folder by a relative include
#      ("../ps/ps_int.h"), which no include path can stop;
#   5. no source of L includes the public header of a higher layer
#      ("efps/ps.h" in lib/optim).
# Any violation is printed; the script fails if there is one.
cmake_minimum_required(VERSION 3.20)
include(${FLAGS})
file(REMOVE_RECURSE ${TMP})
file(MAKE_DIRECTORY ${TMP})
set(failures 0)
macro(fail)
  message("FAIL: ${ARGN}")
  math(EXPR failures "${failures} + 1")
endmacro()

# Preprocesses a file holding `#include "header"` with the include path of
# layer; result: 0 when the include resolves, else the compiler's message.
function(probe layer header out_var)
  string(MAKE_C_IDENTIFIER "${layer}_${header}" id)
  set(src ${TMP}/${id}.c)
  file(WRITE ${src} "#include \"${header}\"\n")
  set(args)
  foreach(dir ${EFPS_INCLUDES_${layer}})
    list(APPEND args -I${dir})
  endforeach()
  execute_process(COMMAND ${EFPS_CC} -E -D_GNU_SOURCE -DEFPS_BUILDING_LIBRARY ${args} ${src}
                  OUTPUT_QUIET ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(rc EQUAL 0)
    set(${out_var} 0 PARENT_SCOPE)
  else()
    string(REGEX MATCH "[^\n]*error[^\n]*" line "${err}") # names the header not found
    set(${out_var} "${line}" PARENT_SCOPE)
  endif()
endfunction()

# The layer a public header belongs to (efps/<layer>.h; version.h is core's,
# efps.h includes them all, so it is above every layer).
function(public_header_layer header out_var)
  get_filename_component(name ${header} NAME_WE)
  if(name STREQUAL "version")
    set(name core)
  elseif(name STREQUAL "efps")
    set(name apps)
  endif()
  set(${out_var} ${name} PARENT_SCOPE)
endfunction()

set(layers)
foreach(dir ${EFPS_LAYER_DIRS})
  get_filename_component(layer ${dir} NAME)
  list(APPEND layers ${layer})
  set(dir_${layer} ${EFPS_SOURCE_DIR}/${dir})
  set(reldir_${layer} ${dir})
  file(GLOB_RECURSE headers_${layer} RELATIVE ${EFPS_SOURCE_DIR}/${dir} ${EFPS_SOURCE_DIR}/${dir}/*.h)
  if(NOT EFPS_HAVE_VERBS) # verbs/*.h include rdma-core's headers, maybe absent
    list(FILTER headers_${layer} EXCLUDE REGEX "^verbs/")
  endif()
endforeach()
list(LENGTH layers nlayers)
set(checked 0)

foreach(i RANGE 0 ${nlayers})
  if(i EQUAL nlayers)
    break()
  endif()
  list(GET layers ${i} low)
  # 1. the include path
  foreach(dir ${EFPS_INCLUDES_${low}})
    if(dir STREQUAL EFPS_SOURCE_DIR)
      fail("${low}: the repository root is on its include path")
    endif()
    foreach(other ${layers})
      if(NOT other STREQUAL low AND dir STREQUAL dir_${other})
        fail("${low}: ${other}'s folder ${dir} is on its include path")
      endif()
    endforeach()
  endforeach()
  if(NOT "${dir_${low}}" IN_LIST EFPS_INCLUDES_${low})
    fail("${low}: its own folder is not on its include path: ${EFPS_INCLUDES_${low}}")
  endif()
  # 2. what must resolve
  foreach(header efps/efps.h ${headers_${low}})
    probe(${low} ${header} err)
    if(NOT err STREQUAL "0")
      fail("${low}: its own \"${header}\" does not resolve: ${err}")
    endif()
  endforeach()
  # 3. what must not: every internal header of the layers above
  math(EXPR next "${i} + 1")
  foreach(j RANGE ${next} ${nlayers})
    if(j EQUAL nlayers)
      break()
    endif()
    list(GET layers ${j} high)
    foreach(header ${headers_${high}})
      foreach(spelling ${header} ${reldir_${high}}/${header})
        if(EXISTS ${dir_${low}}/${spelling})
          continue() # a header of low's own with the same name
        endif()
        probe(${low} ${spelling} err)
        math(EXPR checked "${checked} + 1")
        if(err STREQUAL "0")
          fail("${low} can include ${high}'s internal header \"${spelling}\"")
        elseif(NOT err MATCHES "error: .?${spelling}.? ?(: No such|file not found)")
          fail("${low}: \"${spelling}\" failed for another reason: ${err}")
        endif()
      endforeach()
    endforeach()
  endforeach()
  # 4. and 5. the sources' own includes
  file(GLOB_RECURSE sources ${dir_${low}}/*.c ${dir_${low}}/*.h)
  foreach(src ${sources})
    get_filename_component(here ${src} DIRECTORY)
    file(STRINGS ${src} includes REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
    foreach(line ${includes})
      string(REGEX REPLACE ".*\"([^\"]+)\".*" "\\1" header "${line}")
      get_filename_component(target ${header} ABSOLUTE BASE_DIR ${here})
      string(FIND "${target}" "${dir_${low}}/" at)
      if(EXISTS ${target} AND NOT at EQUAL 0)
        fail("${src}: #include \"${header}\" reaches out of ${reldir_${low}}")
      endif()
      if(header MATCHES "^efps/")
        public_header_layer(${header} owner)
        list(FIND layers ${owner} k)
        if(k GREATER i OR owner STREQUAL "apps")
          fail("${src}: includes \"${header}\", the public header of a higher layer")
        endif()
      endif()
    endforeach()
  endforeach()
endforeach()

if(checked EQUAL 0)
  fail("no include of a higher layer's header was tried")
endif()
if(failures GREATER 0)
  message(FATAL_ERROR "${failures} layering violation(s)")
endif()
message("ok: ${nlayers} layers; ${checked} includes of a higher layer's internal header fail to compile")
