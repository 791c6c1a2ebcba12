#!/usr/bin/env bash
# The tests: the same set-up as scripts/run.sh, then the full ctest suite (unit tests, the
# fixture checks, one test per stage gated level by level, verify, the fuzz regression replays,
# lmlab serve's tests), then the same unit tests, stages, replays and serve tests built with clang,
# AddressSanitizer and UndefinedBehaviorSanitizer (the asan preset; its test preset selects those
# labels): every target is compiled by gcc and by clang. LMLAB_WERROR=1 (set by .ci/run) makes warnings errors in both.
#   bash scripts/test.sh [extra ctest arguments for the default preset, e.g. -L kernel]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
werror=-DLMLAB_WERROR=$([ "${LMLAB_WERROR:-0}" = 1 ] && echo ON || echo OFF)
cmake --preset default "$werror" >/dev/null
cmake --build --preset default
ctest --preset default "$@"
cmake --preset asan "$werror" >/dev/null
cmake --build --preset asan
ctest --preset asan
