#!/usr/bin/env bash
# Installs everything lmlab needs from Debian packages. Idempotent: packages that are already
# installed are not touched, so a second run costs one dpkg query.
set -euo pipefail

packages=(
  build-essential cmake git pkg-config
  libhdf5-dev hdf5-tools          # fixtures: C++ API (H5Cpp.h) and h5dump/h5ls
  libgtest-dev libbenchmark-dev   # unit tests and the kernel benchmark
  nlohmann-json3-dev libcli11-dev libfmt-dev libssl-dev  # report JSON, CLI, formatting, sha256
  python3 python3-torch python3-h5py python3-numpy       # the PyTorch reference exporter
  python3-sentencepiece                                  # tokenizer reference (SentencePiece itself)
  bible-kjv bible-kjv-text                               # public-domain text for the default vocabulary
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install_deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
