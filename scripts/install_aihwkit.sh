#!/usr/bin/env bash
# Build IBM's aihwkit 1.2.0 from source into the project's venv (optional peer for
# tests/peers/test_aihwkit_agreement.py and benchmarks/lstm_speed.py).
#
# Why a script: aihwkit 1.2.0 publishes no wheel for Python 3.11, and its source build needs
# OpenBLAS headers, scikit-build/pybind11/cmake and mypy's stubgen on PATH.  Building against the
# venv's CPU torch 2.13 (no build isolation, no dependency resolution) keeps pip from pulling a
# CUDA torch.  Takes ~10 minutes on 2 cores.  Needs root (or the package present) for libopenblas-dev.
#
#     make aihwkit            # = VENV=.venv scripts/install_aihwkit.sh
set -euo pipefail
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
if "$PY" -c "import aihwkit" 2>/dev/null; then
    echo "aihwkit already installed in $VENV"; exit 0
fi
if ! dpkg -s libopenblas-dev >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y libopenblas-dev || (apt-get update && apt-get install -y libopenblas-dev)
fi
"$PY" -m pip install "setuptools>=77" wheel "scikit-build>=0.18.1" "pybind11>=3.0.1" ninja "cmake>=4.2.1" \
    mypy scikit-learn requests protobuf
PATH="$(cd "$VENV/bin" && pwd):$PATH" "$PY" -m pip install --no-build-isolation --no-deps "aihwkit==1.2.0"
"$PY" -c "import aihwkit; print('aihwkit', aihwkit.__version__, 'installed')"
