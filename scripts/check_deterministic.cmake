# ctest golden.deterministic: export the first fixture of every recipe (and of every recipe on a GGUF model) once
# more into a scratch folder (export_golden.py --one-per-recipe: every way a fixture is made, about
# 40% of the full export's time) and require each file byte-identical to the build's export in
# golden/ (two exports, the second one here). manifest.json lists only what this export wrote, so it
# is not compared; the files it lists are.
# Run as: cmake -DPYTHON=... -DSOURCE_DIR=... -DWORK_DIR=... -DLMLAB=... -P this file
file(REMOVE_RECURSE ${WORK_DIR})
execute_process(COMMAND ${PYTHON} ${SOURCE_DIR}/scripts/export_golden.py --out ${WORK_DIR} --lmlab ${LMLAB} --one-per-recipe
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the export failed (exit ${rc})")
endif()
file(GLOB_RECURSE files RELATIVE ${WORK_DIR} ${WORK_DIR}/*)
list(LENGTH files n)
if(n EQUAL 0)
  message(FATAL_ERROR "the export wrote no files")
endif()
list(REMOVE_ITEM files manifest.json)
foreach(f ${files})
  file(SHA256 ${WORK_DIR}/${f} ha)
  if(NOT EXISTS ${SOURCE_DIR}/golden/${f})
    message(FATAL_ERROR "${f} written by this export but not in golden/ (rebuild to re-export golden/)")
  endif()
  file(SHA256 ${SOURCE_DIR}/golden/${f} hb)
  if(NOT ha STREQUAL hb)
    message(FATAL_ERROR "${f} differs between two exports (golden/ and ${WORK_DIR}): ${hb} vs ${ha}")
  endif()
endforeach()
message(STATUS "${n} files byte-identical across two exports")
file(REMOVE_RECURSE ${WORK_DIR})
