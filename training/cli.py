"""The ``reasonrank-train`` command: ``annotate``, ``distill`` and ``refine``, each from a YAML recipe."""
from __future__ import annotations

import argparse
import json
import sys

from pyterrier_reasonrank.backends.hf import ModelNotFoundError

from .recipes import RecipeError, parse_configs, recipe_section

USAGE = """reasonrank-train {annotate,distill,refine} [--config RECIPE.yaml] [--key value ...]

  annotate   a teacher explains and labels candidate pairs from an ir_datasets source (JSONL)
  distill    supervised fine-tuning of the student on the annotations (LoRA / QLoRA / full)
  refine     reinforcement learning from the distilled student (rwsft or grpo)

Each command reads its section of the recipe; options override it (--help lists them).
"""


def _commands():
    # Imported on use: the training stack (trl, datasets) is heavy, and --help should be quick.
    from .annotate import AnnotateConfig, annotate
    from .distill import DistillConfig, distill
    from .refine import RefineConfig, refine
    from .student import StudentConfig

    return {"annotate": ((AnnotateConfig,), annotate),
            "distill": ((DistillConfig, StudentConfig), distill),
            "refine": ((RefineConfig, StudentConfig), refine)}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if argv[:1] not in (["annotate"], ["distill"], ["refine"]):
        print(USAGE, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument("--config", default=None)
    known, rest = config_parser.parse_known_args(rest)
    config_types, run = _commands()[command]
    try:
        section = recipe_section(known.config, command)
        configs = parse_configs(config_types, section, rest, where=f"the '{command}:' section of {known.config}")
        result = run(*configs)
    except (RecipeError, ModelNotFoundError, ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"reasonrank-train {command}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
