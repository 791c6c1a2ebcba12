#!/usr/bin/env bash
# The main job: install what is missing, build (which exports the golden fixtures), run every
# stage against them, write reports/report.{json,md,html} and print the summary.
#   bash scripts/run.sh [extra arguments for `lmlab check`, e.g. --stage 'kernel.*']
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cmake --preset default >/dev/null
cmake --build --preset default
exec ./build/default/lmlab check "$@"
