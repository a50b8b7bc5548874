"""The ``reasonrank-train`` command: ``annotate``, ``distill`` and ``refine``, each from a YAML recipe."""
from __future__ import annotations

import argparse
import json
import sys

from pyterrier_reasonrank.backends.hf import ModelNotFoundError

from .recipes import COMMANDS, RecipeError, read_recipe

USAGE = """reasonrank-train {annotate,distill,refine} [--config RECIPE.yaml] [--key value ...]

  annotate   a teacher explains and labels candidate pairs from an ir_datasets source (JSONL)
  distill    supervised fine-tuning of the student on the annotations (LoRA / QLoRA / full)
  refine     reinforcement learning from the distilled student (rwsft or grpo)

Each command reads its section of the recipe; options override it (--help lists them).
"""


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument("--config", default=None)
    known, rest = config_parser.parse_known_args(rest)
    try:
        configs = read_recipe(command, known.config, rest)
        from pyterrier_reasonrank import training

        result = getattr(training, command)(*configs)
    except (RecipeError, ModelNotFoundError, ValueError, RuntimeError, FileNotFoundError, *_endpoint_errors()) as error:
        # One line, no traceback: these are the user's to fix (and an endpoint's message has its key redacted).
        print(f"reasonrank-train {command}: {error}", file=sys.stderr)
        return 1
    from .runcard import is_main_process

    if is_main_process():  # once, under accelerate launch
        print(json.dumps(result, indent=2, default=str))
    return 0


def _endpoint_errors() -> tuple:
    """The ``openai`` client's errors that outlasted its retries (wrong key, server down), when it is installed."""
    try:
        from openai import APIError
    except ImportError:
        return ()
    return (APIError,)


if __name__ == "__main__":
    sys.exit(main())
