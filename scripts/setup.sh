#!/usr/bin/env bash
# Set-up on a fresh machine: a virtual environment in .venv with torch and the project (and its
# dev, train and openai extras) installed in editable mode. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# torch is pinned here, not in the package metadata: on our CPU machines this version is a local
# wheel, and a looser range would pull gigabytes of CUDA packages. Users with CUDA keep their build.
.venv/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[dev,train,openai]"
