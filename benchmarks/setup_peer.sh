#!/usr/bin/env bash
# Create .venv-peer: infinity-emb (an OpenAI-compatible embedding server) in its own virtual
# environment, for the optional `peer` benchmark scenario (benchmarks/peers.py).
# Usage: benchmarks/setup_peer.sh   (from anywhere; PYTHON=python3.11 to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-peer

"$PYTHON" -m venv "$VENV"
# Exact pins (the combination tested here) so the peer's figures are comparable between runs;
# infinity-emb 0.0.78 (newest on PyPI) requires sentence-transformers < 4 and numpy < 2.
# CPU torch comes from constraints/cpu.txt (plain `torch` would be a multi-GB CUDA build).
# No model download: peers.py points the server at the local all-MiniLM-L6-v2 folder.
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -c constraints/cpu.txt \
    "infinity-emb[server,torch]==0.0.78" \
    "sentence-transformers==3.4.1" \
    "transformers==4.49.0"
"$VENV/bin/infinity_emb" --help >/dev/null
echo "peer ready: $("$VENV/bin/python" -c 'import importlib.metadata as m; print("infinity-emb", m.version("infinity-emb"))')"
