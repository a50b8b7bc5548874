"""YAML recipes: one file, a section per command, read into the commands' dataclass configs.

A recipe looks like::

    annotate:
      dataset: irds:cranfield
      teacher: local
    distill:
      model_name_or_path: Qwen/Qwen2.5-1.5B-Instruct
      learning_rate: 2.0e-4
    refine:
      algorithm: rwsft

Command-line options (``--learning_rate 1e-4``) override the recipe. A key or option that no
config field has is an error that lists the valid ones.
"""
from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Optional, Sequence

import yaml
from transformers import HfArgumentParser


class RecipeError(ValueError):
    """A recipe or command line that does not fit the configs."""


COMMANDS = {"annotate": ("AnnotateConfig",), "distill": ("DistillConfig", "StudentConfig"),
            "refine": ("RefineConfig", "StudentConfig")}
"""Each command of ``reasonrank-train`` (a function of :mod:`pyterrier_reasonrank.training` of the
same name) and the configs it takes."""


def config_types(command: str) -> tuple:
    """The dataclass configs a command takes."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; one of {list(COMMANDS)}")
    from pyterrier_reasonrank import training  # loads the (heavy) training stack on use

    return tuple(getattr(training, name) for name in COMMANDS[command])


def read_recipe(command: str, path: Optional[str], overrides: Sequence[str] = ()) -> tuple:
    """The configs of ``command`` from its section of the recipe at ``path``, with command-line
    style ``overrides`` (``["--learning_rate", "1e-4"]``) on top.

    .. code-block:: python

        config, student = read_recipe("distill", "training/configs/tiny-cpu.yaml", ["--num_train_epochs", "1"])
        distill(config, student)
    """
    return parse_configs(config_types(command), recipe_section(path, command), overrides,
                         where=f"the '{command}:' section of {path}")


def valid_keys(config_types: Sequence[type]) -> list[str]:
    """Every field the configs take, sorted."""
    return sorted({f.name for config_type in config_types for f in dataclasses.fields(config_type) if f.init})


def recipe_section(path: Optional[str], section: str) -> dict:
    """The section of a recipe file (empty without a file)."""
    if path is None:
        return {}
    recipe = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(recipe, dict) or section not in recipe:
        raise RecipeError(f"{path} has no '{section}:' section (it has {sorted(recipe) if isinstance(recipe, dict) else 'none'})")
    return recipe[section] or {}


def parse_configs(config_types: Sequence[type], section: dict, argv: Sequence[str], *, where: str = "the recipe") -> tuple:
    """Build the configs from a recipe section, overridden by command-line options.

    Raises:
        RecipeError: A key or option that no config takes, with the valid ones listed.
    """
    keys = valid_keys(config_types)
    unknown = sorted(set(section) - set(keys))
    if unknown:
        raise RecipeError(_unknown_message(f"unknown key(s) in {where}", unknown, keys, ""))
    parser = HfArgumentParser(config_types)
    parser.allow_abbrev = False  # "--lora_alph" is a typo to report, not lora_alpha
    parser.set_defaults(**section)
    *configs, remaining = parser.parse_args_into_dataclasses(args=list(argv), return_remaining_strings=True)
    if remaining:
        options = [arg for arg in remaining if arg.startswith("--")] or remaining
        raise RecipeError(_unknown_message("unknown command-line option(s)", options, keys, "--"))
    return tuple(configs)


def _unknown_message(what: str, unknown: Sequence[str], keys: Sequence[str], prefix: str) -> str:
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name.lstrip("-").split("=")[0], keys, n=1)
        if close:
            hints.append(f"{name} (did you mean {prefix}{close[0]}?)")
        else:
            hints.append(name)
    return f"{what}: {', '.join(hints)}. Valid keys: {', '.join(keys)}"
