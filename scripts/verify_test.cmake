# ctest verify.*: `lmlab verify` on a copy of a model (placed elsewhere, as a user's would be).
#   cmake -DLMLAB=... -DMODEL=... -DWORK_DIR=... -DMODE=pass|refuse|localise [-DFIELD= -DVALUE=json -DSHOWN=]
#         [-DPROMPT_IDS=1,403,407,300] -P this file
# pass:     verify passes and prints the verdict; a second run reuses the reference's fixtures.
# refuse:   config.json gets FIELD = VALUE (JSON); verify must refuse before running anything, naming
#           the field and showing the value (the text SHOWN).
# localise: LMLAB is the deliberately wrong build (lmlab_faulty: RoPE with the other convention); the
#           verdict must name layer 0's q as the first divergence, added by that layer.
# A model under ../shared that is absent prints SKIPPED (the test's SKIP_REGULAR_EXPRESSION).
if(NOT EXISTS ${MODEL})
  message("SKIPPED: ${MODEL} not found (the shared data folder is absent)")
  return()
endif()
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
file(COPY ${MODEL} DESTINATION ${WORK_DIR})
get_filename_component(name ${MODEL} NAME)
set(copy ${WORK_DIR}/${name})

if(MODE STREQUAL "refuse")
  file(READ ${copy}/config.json config)
  string(JSON config SET "${config}" ${FIELD} "${VALUE}")
  file(WRITE ${copy}/config.json "${config}")
endif()

if(NOT PROMPT_IDS)
  set(PROMPT_IDS 1,403,407,300)
endif()
set(cmd ${LMLAB} verify --model ${copy} --prompt-ids ${PROMPT_IDS} --generate 8 --out ${WORK_DIR}/out)
execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")

if(MODE STREQUAL "pass")
  if(NOT rc EQUAL 0 OR NOT out MATCHES "verify: PASS ")
    message(FATAL_ERROR "verify did not pass (exit ${rc})")
  endif()
  foreach(f report.md report.json manifest.json model/forward.h5 model/kv_cache.h5 generation/greedy.h5)
    if(NOT EXISTS ${WORK_DIR}/out/${f})
      message(FATAL_ERROR "verify wrote no ${f}")
    endif()
  endforeach()
  execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message("second run:\n${out}${err}")
  if(NOT rc EQUAL 0 OR NOT err MATCHES "reusing the reference fixtures")
    message(FATAL_ERROR "the second run did not reuse the fixtures (exit ${rc})")
  endif()
elseif(MODE STREQUAL "refuse")
  # "config.json: <field>": the field named in the message itself (the work folder's path may hold it too)
  if(rc EQUAL 0 OR NOT err MATCHES "config.json: ${FIELD}" OR err MATCHES "verify: loading")
    message(FATAL_ERROR "verify did not refuse ${FIELD} = ${VALUE} up front (exit ${rc})")
  endif()
  string(FIND "${err}" "${SHOWN}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "the refusal does not show the value as ${SHOWN}")
  endif()
elseif(MODE STREQUAL "localise")
  if(NOT rc EQUAL 1 OR NOT out MATCHES "verify: FAIL [^\n]*output 'layer0\\.q'; it fails even teacher-forced[^\n]*ADDS the error")
    message(FATAL_ERROR "the wrong build's verdict does not point at layer0.q as the layer that adds the error (exit ${rc})")
  endif()
else()
  message(FATAL_ERROR "MODE must be pass, refuse or localise, not '${MODE}'")
endif()
file(REMOVE_RECURSE ${WORK_DIR})
