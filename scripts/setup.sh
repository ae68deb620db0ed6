#!/usr/bin/env bash
# Creates the project virtual environment and installs longtail into it.
#
# torch: a torch the base interpreter can already import is kept (the venv then sees the base
# site-packages); otherwise torch==2.13.0 is installed before anything else, so that the
# `torch>=2.1` requirement never makes pip pull the CUDA build and its several GB of packages.
# Override with LONGTAIL_TORCH_SPEC (e.g. "torch==2.5.1").
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
# lightning and hf: the tests of longtail.integrations run (they skip without them); neither resolves a torch of
# its own (lightning asks for torch>=2.1, transformers for none, accelerate for torch>=2.0).
EXTRAS=${LONGTAIL_EXTRAS:-test,lightning,hf}
TORCH_SPEC=${LONGTAIL_TORCH_SPEC:-torch==2.13.0}
STAMP="$VENV/.longtail-installed"

if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$(cat "$STAMP")" = "$EXTRAS" ]; then
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
        echo "setup: keeping the torch of $("$PYTHON" -c 'import sys; print(sys.executable)')"
        "$PYTHON" -m venv --system-site-packages "$VENV"
    else
        "$PYTHON" -m venv "$VENV"
    fi
fi

VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    echo "setup: installing $TORCH_SPEC"
    "$VPY" -m pip install -q "$TORCH_SPEC"
fi
"$VPY" -m pip install -q -e ".[$EXTRAS]"

# The real-data demo and benchmarks use Debian's Fashion-MNIST; install it when we can.
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's dataset-fashion-mnist"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
        || echo "setup: could not install dataset-fashion-mnist; see README (Data) to get Fashion-MNIST by hand"
fi

echo "$EXTRAS" > "$STAMP"
"$VPY" -c "import torch, longtail; print(f'setup: longtail {longtail.__version__} with torch {torch.__version__}')"
