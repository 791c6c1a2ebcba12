#!/usr/bin/env bash
# The tests: the same set-up as scripts/run.sh, then the full ctest suite (unit tests, the
# fixture checks, and one test per stage gated level by level).
#   bash scripts/test.sh [extra ctest arguments, e.g. -L kernel]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cmake --preset default >/dev/null
cmake --build --preset default
exec ctest --preset default "$@"
