#!/usr/bin/env bash
# Fuzzes lmlab's parsers with libFuzzer (fuzz/README.md):
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET=600] [PARALLEL=2] [TARGET...]
# Builds the fuzz preset (clang, AddressSanitizer + UndefinedBehaviorSanitizer), makes the seed
# corpora from real files (scripts/make_fuzz_corpus.py) once, then runs each target for the given
# time, PARALLEL at a time, each with
#   -rss_limit_mb=2048     a run that grows past 2 GB is a finding
#   -malloc_limit_mb=512   so is a single allocation past 512 MB (a header claiming more than the file holds)
#   -timeout=10            and an input that takes 10 s
# Logs go to build/fuzz/logs/<target>.log, findings to build/fuzz/artifacts/<target>/; the summary
# (executions, time, findings per target) is printed at the end and written to build/fuzz/summary.md.
# A finding becomes a regression input: copy it to fuzz/regressions/<target>/ (ctest replays those).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-600}
PARALLEL=${2:-2}
shift $(( $# > 2 ? 2 : $# ))
ALL=(llama2c llama2c_q8 llmc hf_dir hdf5_model fixture cli tokenizer_llama2c tokenizer_gpt2_files tokenizer_json
     tokenizer_llmc tokenizer_vocab_merges text_llama2 text_gpt2 text_qwen requests openai_request gguf)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz --target $(printf 'fuzz_%s ' "${TARGETS[@]}")
OUT=build/fuzz
if [ ! -d "$OUT/corpus" ]; then
  .venv/bin/python scripts/make_fuzz_corpus.py --out "$OUT/corpus"
fi
mkdir -p "$OUT/logs"
export LMLAB_SHARED=${LMLAB_SHARED:-$(cd .. && pwd)/shared}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_one() {
  local t=$1
  mkdir -p "$OUT/corpus/$t" "$OUT/artifacts/$t"
  "$OUT/fuzz_$t" -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$t/" "$OUT/corpus/$t" $(ls -d "fuzz/regressions/$t" 2>/dev/null) \
    > "$OUT/logs/$t.log" 2>&1 || true  # (the regression inputs seed it too; new inputs go to the corpus)
}
running=0
for t in "${TARGETS[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$PARALLEL" ]; then wait -n; running=$((running - 1)); fi
done
wait

{
  echo "| target | executions | seconds | exec/s | corpus | findings |"
  echo "|---|---|---|---|---|---|"
  for t in "${TARGETS[@]}"; do
    log=$OUT/logs/$t.log
    execs=$(awk '/stat::number_of_executed_units:/ {n = $2} END {print n}' "$log")
    rate=$(awk '/stat::average_exec_per_sec:/ {n = $2} END {print n}' "$log")
    corpus=$(find "$OUT/corpus/$t" -type f | wc -l)
    found=$(find "$OUT/artifacts/$t" -type f 2>/dev/null | wc -l)
    secs=$(awk '/^Done [0-9]+ runs in [0-9]+ second/ {n = $5} END {print n}' "$log")  # less when it stopped at a finding
    echo "| $t | ${execs:-?} | ${secs:-?} | ${rate:-?} | $corpus | $found |"
  done
} | tee "$OUT/summary.md"
