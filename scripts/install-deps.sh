#!/usr/bin/env bash
# Installs, non-interactively, exactly the Debian packages Strata needs that are missing.
# Safe to run twice: a second run installs nothing.
set -euo pipefail
packages=(
  cmake ninja-build g++ pkg-config
  libtorch-dev libopenblas0-pthread
  libgloo-dev
  libhdf5-dev hdf5-tools
  libboost-program-options-dev
  libgtest-dev
  nlohmann-json3-dev
  zlib1g-dev
  dataset-fashion-mnist
)
# Optional extras: python3-torch for the Python-loop benchmark, python3-h5py for the h5py examples.
if [ "${STRATA_WITH_PYTHON:-0}" = 1 ]; then packages+=(python3-torch python3-h5py); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then missing+=("$p"); fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
