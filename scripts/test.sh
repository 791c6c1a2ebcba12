#!/usr/bin/env bash
# The tests: the same set-up as scripts/run.sh, then the full ctest suite (unit tests, the
# fixture checks, one test per stage gated level by level, verify, the fuzz regression replays),
# then the same unit tests, stages and replays built with AddressSanitizer + UndefinedBehaviorSanitizer
# (the asan preset; its test preset selects those labels).
#   bash scripts/test.sh [extra ctest arguments for the default preset, e.g. -L kernel]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cmake --preset default >/dev/null
cmake --build --preset default
ctest --preset default "$@"
cmake --preset asan >/dev/null
cmake --build --preset asan
ctest --preset asan
