# ctest browser.*: the pages lmlab writes, opened in headless Chromium by scripts/browser/check.py.
#   cmake -DPYTHON=... -DSOURCE_DIR=... -DMODE=report|faulty|trace [-DLMLAB=... -DWORK_DIR=...] [...] -P this file
# report: REPORT_DIR holds a full `lmlab check`'s report (plain.check's); report.html must show
#         report.json's numbers.
# faulty: LMLAB is the deliberately wrong build (lmlab_faulty: RoPE with the other pairing); its
#         report.html must show kernel.rope failing with its heatmaps and the stages it blocks as not
#         run; `lmlab diff FULL_REPORT this` (DIFF_LMLAB, the correct build) writes diff.html, whose
#         table must hold both reports' numbers.
# trace:  `lmlab trace --model MODEL [--tokenizer TOKENIZER]` twice: the same bytes; the page must draw
#         PLOTS heatmaps.
# Without Chromium (or, for a trace, without the model's tokenizer) the test prints SKIPPED (the
# tests' SKIP_REGULAR_EXPRESSION).
if(WORK_DIR)
  file(REMOVE_RECURSE ${WORK_DIR})
  file(MAKE_DIRECTORY ${WORK_DIR})
endif()

function(run)  # run(EXPECT <exit code> <command...>): the command's output is shown, its exit code checked
  cmake_parse_arguments(R "" "EXPECT" "" ${ARGN})
  execute_process(COMMAND ${R_UNPARSED_ARGUMENTS} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(LENGTH "${out}" n)
  if(n GREATER 3000)  # lmlab check prints a line per stage: keep the end (the summary)
    math(EXPR from "${n} - 3000")
    string(SUBSTRING "${out}" ${from} -1 out)
    set(out "...${out}")
  endif()
  message("$ ${R_UNPARSED_ARGUMENTS}\n${out}${err}")
  if(NOT rc EQUAL R_EXPECT)
    message(FATAL_ERROR "exit ${rc}, expected ${R_EXPECT}")
  endif()
endfunction()

function(browser_check)  # the page check; exit 77 (no Chromium) ends the test as skipped
  execute_process(COMMAND ${PYTHON} ${SOURCE_DIR}/scripts/browser/check.py ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  message("${out}${err}")
  if(rc EQUAL 77)
    set(skipped TRUE PARENT_SCOPE)
  elseif(NOT rc EQUAL 0)
    message(FATAL_ERROR "browser_check failed (exit ${rc})")
  endif()
endfunction()

if(MODE STREQUAL "report")
  browser_check(--page ${REPORT_DIR}/report.html --report ${REPORT_DIR}/report.json)
elseif(MODE STREQUAL "faulty")
  # (the stages plain.check leaves out, as the full report it is compared with)
  run(EXPECT 1 ${LMLAB} check --except "*.gguf.*" --except "kernel.ggml.*" --except "quant.report.*" --report ${WORK_DIR})
  browser_check(--page ${WORK_DIR}/report.html --report ${WORK_DIR}/report.json --expect-status kernel.rope=fail
                --expect-not-run)
  if(skipped)
    return()
  endif()
  run(EXPECT 0 ${DIFF_LMLAB} diff ${FULL_REPORT} ${WORK_DIR}/report.json --html ${WORK_DIR}/diff.html)
  browser_check(--page ${WORK_DIR}/diff.html --diff ${FULL_REPORT} ${WORK_DIR}/report.json)
elseif(MODE STREQUAL "trace")
  # tiny-gpt2 and tiny-qwen2 carry the real GPT-2 / Qwen2 tokenizer.json, which the exporter copies
  # from ../shared: without ../shared there is none, and a prompt cannot be encoded
  if(IS_DIRECTORY ${MODEL} AND NOT TOKENIZER AND NOT EXISTS ${MODEL}/tokenizer.json)
    message("SKIPPED: ${MODEL} has no tokenizer.json (the exporter copies it from ../shared/tokenizers, which is absent)")
    return()
  endif()
  set(cmd ${LMLAB} trace --model ${MODEL} --prompt "In the beginning was the word" --max-new-tokens 6)
  if(TOKENIZER)
    list(APPEND cmd --tokenizer ${TOKENIZER})
  endif()
  run(EXPECT 0 ${cmd} --out ${WORK_DIR}/trace.html)
  run(EXPECT 0 ${cmd} --out ${WORK_DIR}/again.html)
  file(SHA256 ${WORK_DIR}/trace.html first)
  file(SHA256 ${WORK_DIR}/again.html second)
  if(NOT first STREQUAL second)
    message(FATAL_ERROR "two traces of the same prompt differ")
  endif()
  browser_check(--page ${WORK_DIR}/trace.html --expect-plots ${PLOTS})
else()
  message(FATAL_ERROR "MODE must be report, faulty or trace, not '${MODE}'")
endif()
