#!/usr/bin/env bash
# Installs everything lmlab needs. Idempotent: a second run costs one dpkg query and one checksum.
#  1. Debian packages (--no-install-recommends), PyTorch among them: Debian's python3-torch 1.13.1
#     belongs to /usr/bin/python3.
#  2. The reference environment .venv: `/usr/bin/python3 -m venv --system-site-packages` (so Debian's
#     torch, numpy and h5py stay visible and untouched) with the exact pins of scripts/requirements.txt
#     (transformers, tokenizers, safetensors, tiktoken, gguf, accelerate, onnx; openai and httpx for the serving tests). Re-installed only when that file changes.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake git pkg-config
  libhdf5-dev hdf5-tools          # fixtures: C++ API (H5Cpp.h) and h5dump/h5ls
  libgtest-dev libbenchmark-dev   # unit tests and the kernel benchmark
  nlohmann-json3-dev libcli11-dev libfmt-dev libssl-dev  # JSON (report, safetensors, tokenizer.json), CLI, formatting, sha256
  libpcre2-dev libutf8proc-dev    # byte-level BPE: pre-tokenisation regexes (GPT-2, Qwen), NFC normalisation
  libcpp-httplib-dev curl         # lmlab serve's HTTP/1.1 server (cpp-httplib 0.11); curl for its tests
  clang libclang-rt-14-dev        # the asan and fuzz presets (clang): libFuzzer, sanitizers
  python3 python3-venv python3-torch python3-h5py python3-numpy  # the PyTorch reference exporter
  python3-sentencepiece                                  # tokenizer reference (SentencePiece itself)
  bible-kjv bible-kjv-text                               # public-domain text for the default vocabulary
  chromium                        # the browser test: report.html and trace.html opened headless (ctest -L browser)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} Debian packages present"
else
  echo "install_deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The virtual environment: its stamp holds the sha256 of the requirements it was made from.
req=scripts/requirements.txt
stamp=.venv/.lmlab-requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "install_deps: .venv matches $req"
  exit 0
fi
echo "install_deps: making .venv from $req"
[ -x .venv/bin/python ] || /usr/bin/python3 -m venv --system-site-packages .venv
numpy_before=$(.venv/bin/python -c "import numpy; print(numpy.__version__)")
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
numpy_after=$(.venv/bin/python -c "import numpy, torch, h5py, transformers, tokenizers, tiktoken, safetensors, gguf, accelerate, onnx, jinja2; print(numpy.__version__)")
if [ "$numpy_before" != "$numpy_after" ]; then
  echo "install_deps: pip replaced numpy $numpy_before with $numpy_after behind Debian's torch; fix the pins in $req" >&2
  exit 1
fi
echo "$want" > "$stamp"
