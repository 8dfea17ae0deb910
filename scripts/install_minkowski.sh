#!/usr/bin/env bash
# Build MinkowskiEngine 0.5.4 (CPU only) from PyPI's source package and install it into a
# target Python:   bash scripts/install_minkowski.sh /path/to/python [build_dir]
#
# Why a separate build venv: ME's setup.py needs numpy.distutils (gone in numpy 2) and an old
# setuptools, which we do not want in the target environment. The build venv gets the SAME torch
# version as the target, because the extension is compiled against torch's C++ ABI.
# The finished wheel is installed into the target with --no-deps.
set -euo pipefail

TARGET_PY="${1:?usage: install_minkowski.sh TARGET_PYTHON [BUILD_DIR]}"
BUILD_DIR="${2:-${TMPDIR:-/tmp}/minkowski_build}"

TORCH_VERSION="$("$TARGET_PY" -c 'import torch; print(torch.__version__.split("+")[0])')" || {
    echo "install_minkowski.sh: $TARGET_PY cannot import torch; install torch there first" >&2
    exit 1
}

if ! dpkg -s libopenblas-dev >/dev/null 2>&1; then
    apt-get update -q
    apt-get install -y -q libopenblas-dev
fi

rm -rf "$BUILD_DIR"
"$TARGET_PY" -m venv "$BUILD_DIR/venv"
BPY="$BUILD_DIR/venv/bin/python"
"$BPY" -m pip install -q "numpy<2" wheel "torch==$TORCH_VERSION"
# torch declares setuptools>=77, but numpy.distutils (used by ME's setup.py) needs the old one;
# torch only needs setuptools at build time for cpp_extension, which works with 65.5.
"$BPY" -m pip install -q --no-deps "setuptools==65.5.0"

# CPU_ONLY is chosen by setup.py itself when no CUDA is visible; hide any GPU to be sure.
CUDA_VISIBLE_DEVICES="" MAX_JOBS="$(nproc)" "$BPY" -m pip wheel -v --no-deps --no-build-isolation \
    --no-binary :all: -w "$BUILD_DIR/wheels" "minkowskiengine==0.5.4"

"$TARGET_PY" -m pip install --no-deps --force-reinstall "$BUILD_DIR"/wheels/MinkowskiEngine-*.whl
echo "install_minkowski.sh: MinkowskiEngine 0.5.4 installed into $TARGET_PY (torch $TORCH_VERSION)"
