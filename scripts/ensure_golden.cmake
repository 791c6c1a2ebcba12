# The build's `golden` target: re-export the fixtures unless golden/manifest.json says they are
# current: made by the exporter as it is now (sha256 over scripts/*.py, sorted by name, contents
# concatenated, as export_golden.py and the harness compute it) and every listed file present
# with its listed sha256. So editing the exporter, deleting a fixture or damaging one all lead to
# a fresh export on the next build; an unchanged tree costs a few hashes.
# Run as: cmake -DPYTHON=... -DSOURCE_DIR=... -DGOLDEN_DIR=... -P ensure_golden.cmake
set(manifest ${GOLDEN_DIR}/manifest.json)
set(reason "")

file(GLOB scripts ${SOURCE_DIR}/scripts/*.py)
list(SORT scripts)
set(all "")
foreach(f ${scripts})
  file(READ ${f} content HEX)
  string(APPEND all "${content}")
endforeach()
# hash the raw bytes: write the hex back as binary-identical content via a temporary file
file(WRITE ${GOLDEN_DIR}/.exporter.hex "${all}")
execute_process(COMMAND ${PYTHON} -c "import sys,hashlib;print(hashlib.sha256(bytes.fromhex(open(sys.argv[1]).read())).hexdigest())"
                ${GOLDEN_DIR}/.exporter.hex OUTPUT_VARIABLE exporter OUTPUT_STRIP_TRAILING_WHITESPACE)
file(REMOVE ${GOLDEN_DIR}/.exporter.hex)

if(NOT EXISTS ${manifest})
  set(reason "no manifest")
else()
  file(READ ${manifest} json)
  string(JSON recorded ERROR_VARIABLE err GET "${json}" exporter_sha256)
  if(err OR NOT recorded STREQUAL exporter)
    set(reason "exporter changed")
  else()
    string(JSON n ERROR_VARIABLE err LENGTH "${json}" files)
    if(err OR n EQUAL 0)
      set(reason "manifest lists no files")
    else()
      math(EXPR last "${n} - 1")
      foreach(i RANGE ${last})
        string(JSON rel MEMBER "${json}" files ${i})
        string(JSON want GET "${json}" files ${rel})
        if(NOT EXISTS ${GOLDEN_DIR}/${rel})
          set(reason "${rel} missing")
          break()
        endif()
        file(SHA256 ${GOLDEN_DIR}/${rel} have)
        if(NOT have STREQUAL want)
          set(reason "${rel} changed since export")
          break()
        endif()
      endforeach()
    endif()
  endif()
endif()

if(reason STREQUAL "")
  message(STATUS "golden fixtures are current (exporter ${exporter})")
else()
  message(STATUS "exporting golden fixtures (${reason})")
  execute_process(COMMAND ${PYTHON} ${SOURCE_DIR}/scripts/export_golden.py --out ${GOLDEN_DIR}
                  WORKING_DIRECTORY ${SOURCE_DIR} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "scripts/export_golden.py failed (exit ${rc})")
  endif()
endif()
