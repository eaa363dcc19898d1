#!/usr/bin/env bash
# tools/bootstrap.sh: install every Debian package that chimera's build and tests need.
# Idempotent and quiet: when everything is present it only checks and returns in a second.
# CUDA is not installed here: it is optional, and used when the machine already has nvcc.
# Then tools/fetch_glslang.sh puts a modern glslang library into ~/.cache/chimera (pinned, from
# PyPI) for the Vulkan shader variants Debian's glslang 12 cannot compile.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates curl python3 python3-matplotlib
  clang libomp-dev libclang-rt-14-dev
  libyaml-dev libcriterion-dev libopenblas-dev
  zlib1g-dev libzstd-dev libjansson-dev libpcre2-dev libutf8proc-dev
  libvulkan-dev glslc glslang-tools spirv-tools vulkan-validationlayers
  mesa-vulkan-drivers vulkan-tools
  libopenmpi-dev openmpi-bin
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# The modern glslang for the newer cooperative-matrix shader variants (warns, never fails).
fetch_glslang() { bash "$(dirname "$0")/fetch_glslang.sh" || true; }

if [ ${#missing[@]} -eq 0 ]; then
  echo "bootstrap: all ${#PACKAGES[@]} packages present"
  fetch_glslang
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "bootstrap: run as root (or install sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi

echo "bootstrap: installing ${#missing[@]} package(s): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fetch_glslang
echo "bootstrap: done"
