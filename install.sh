#!/usr/bin/env bash
# Install everything the project needs into the current Python environment, on a fresh machine:
# PyTorch (the builds this project is tested with), the project with its test extras, and
# Debian's Fashion-MNIST (the default dataset; needs root or sudo, skipped when already present).
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq dataset-fashion-mnist
  else
    echo "install.sh: no apt-get here; put the Fashion-MNIST IDX files in ./data (see README)." >&2
  fi
fi

python -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
