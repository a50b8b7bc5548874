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
config field has is an error that lists the valid ones. ``refine``'s ``algorithm`` (key or option)
picks its config, :class:`~.rwsft.RwsftConfig` or :class:`~.grpo.GrpoRefineConfig`; an option of
the other algorithm's is refused as such.

A recipe is a file, or the name of one that ships with the package (``paper-3b``,
``recommended``, ``tiny-cpu``; ``reasonrank-train recipes`` lists them, and the accelerate
configs): a file that exists wins over a bundled name.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import yaml
from transformers import HfArgumentParser

from pyterrier_reasonrank.errors import InputError


class RecipeError(InputError):
    """A recipe or command line that does not fit the configs."""


@dataclasses.dataclass(frozen=True)
class Choice:
    """A key whose value picks a command's first config: refine's ``algorithm`` picks rwsft's or GRPO's."""

    key: str
    configs: dict[str, str]  # value -> the name of its config
    default: str


@dataclasses.dataclass(frozen=True)
class Command:
    """A command of ``reasonrank-train``: a function of :mod:`pyterrier_reasonrank.training` of the same name.

    It holds the configs the command takes (by name, so that listing commands loads nothing), what
    it does, and the key that picks its first config, if any (the first name is then the configs'
    shared base).
    """

    configs: tuple[str, ...]
    summary: str
    choice: Optional[Choice] = None


COMMANDS = {
    "annotate": Command(("AnnotateConfig",), "a teacher explains and labels candidate pairs, or writes search "
                                             "queries for questions (JSONL)"),
    "distill": Command(("DistillConfig", "StudentConfig"), "supervised fine-tuning of the student on the annotations "
                                                           "(LoRA / QLoRA / full)"),
    "refine": Command(("RefineConfig", "StudentConfig"), "reinforcement learning from the distilled student "
                                                         "(rwsft or grpo)",
                      Choice("algorithm", {"rwsft": "RwsftConfig", "grpo": "GrpoRefineConfig"}, default="rwsft")),
}
"""The commands of ``reasonrank-train``, by name."""


BUNDLED = Path(__file__).resolve().parent / "configs"
"""Where the bundled recipes (``*.yaml``) and accelerate configs (``accelerate/*.yaml``) are installed."""


def bundled_files() -> dict[str, Path]:
    """Every bundled recipe and accelerate config, by name: its path under :data:`BUNDLED` without ``.yaml``.

    The names are ``paper-3b``, ``recommended``, ``tiny-cpu``, ``accelerate/ddp``...
    """
    names = {path.relative_to(BUNDLED).with_suffix("").as_posix(): path for path in BUNDLED.rglob("*.yaml")}
    return {name: names[name] for name in sorted(names, key=lambda name: ("/" in name, name))}  # recipes first


def bundled_recipes() -> dict[str, Path]:
    """The bundled recipes (no accelerate configs), by name."""
    return {name: path for name, path in bundled_files().items() if "/" not in name}


def recipe_path(recipe: Union[str, Path]) -> Path:
    """The file a recipe names: the path itself if it exists, else the bundled recipe of that name.

    Args:
        recipe: A path, or a bundled recipe's name with or without ``.yaml`` (``paper-3b``, ``tiny-cpu.yaml``).

    Raises:
        RecipeError: Neither a file nor a bundled name; the one line lists the bundled names.
    """
    path = Path(recipe)
    return path if path.exists() else bundled_path(str(recipe), bundled_recipes(),
                                                   missing="no such file, nor a bundled recipe")


def bundled_path(name: str, bundled: Optional[dict[str, Path]] = None, *, missing: str = "not a bundled name") -> Path:
    """The bundled file of that name (with or without ``.yaml``), e.g. ``accelerate/ddp``.

    Args:
        name: The bundled file's name.
        bundled: The files to look in, by name; by default :func:`bundled_files`.
        missing: What the error says the name is not.

    Raises:
        RecipeError: Not a bundled name; the one line lists them.
    """
    bundled = bundled_files() if bundled is None else bundled
    key = name.removesuffix(".yaml")
    if key in bundled:
        return bundled[key]
    close = difflib.get_close_matches(key, bundled, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise RecipeError(f"{name}: {missing}{hint}; the bundled names: {', '.join(bundled)}")


def bundled_listing() -> str:
    """What ``reasonrank-train recipes`` prints: each bundled file's name and what its first comment line says."""
    files = bundled_files()
    width = max(map(len, files))
    lines = [f"  {name:<{width}}  {_summary(path)}" for name, path in files.items()]
    return ("The bundled recipes (reasonrank-train COMMAND --config NAME) and accelerate configs\n"
            "(accelerate launch --config_file \"$(reasonrank-train recipes --path accelerate/ddp)\" ...):\n"
            + "\n".join(lines) + f"\nThey are in {BUNDLED}; copy one to change it.\n")


def _summary(path: Path) -> str:
    """The first line of a file's leading comment, up to its first colon or full stop."""
    first = path.read_text().split("\n", 1)[0]
    return re.split(r"[:.](?:\s|$)", first.lstrip("# "), maxsplit=1)[0] if first.startswith("#") else ""


def config_types(command: str, chosen: Optional[str] = None) -> tuple:
    """The dataclass configs a command takes; for a command with a :class:`Choice`, those of the value ``chosen``.

    ``config_types("refine", "grpo")`` is ``(GrpoRefineConfig, StudentConfig)``; without ``chosen``,
    the choice's default.
    """
    if command not in COMMANDS:
        raise InputError(f"unknown command {command!r}; one of {list(COMMANDS)}")
    from pyterrier_reasonrank import training  # loads the (heavy) training stack on use

    names, choice = COMMANDS[command].configs, COMMANDS[command].choice
    if choice is not None:
        chosen = choice.default if chosen is None else chosen
        if chosen not in choice.configs:
            raise InputError(f"{choice.key} {chosen!r} is not one of {', '.join(choice.configs)}")
        names = (choice.configs[chosen], *names[1:])
    return tuple(getattr(training, name) for name in names)


def read_recipe(command: str, path: Optional[str], overrides: Sequence[str] = ()) -> tuple:
    """The configs of ``command`` from its section of the recipe at ``path``, with ``overrides`` on top.

    ``path`` is a file or a bundled recipe's name (see :func:`recipe_path`). The overrides are
    written as on the command line (``["--learning_rate", "1e-4"]``).

    .. code-block:: python

        config, student = read_recipe("distill", "tiny-cpu", ["--num_train_epochs", "1"])
        distill(config, student)
    """
    path = str(recipe_path(path)) if path is not None else None
    where = f"the '{command}:' section of {path}" if path else "the command line"
    return parse_command(command, recipe_section(path, command), overrides, where=where)


def parse_command(command: str, section: dict, argv: Sequence[str], *, where: str = "the recipe") -> tuple:
    """The configs of ``command`` from a recipe section, overridden by command-line options.

    For a command with a :class:`Choice` (refine's ``algorithm``), the option, else the section's
    key, else the default picks the configs; a key of another choice's configs is refused as such.

    Raises:
        RecipeError: As :func:`parse_configs`, or a choice that is not one of the configs'.
    """
    choice = COMMANDS[command].choice if command in COMMANDS else None
    if choice is None:
        return parse_configs(config_types(command), section, argv, where=where)
    given = option_values(argv, [choice.key])
    chosen = given[-1] if given else section.get(choice.key, choice.default)
    if chosen not in choice.configs:
        source = f"the command line: --{choice.key}" if given else f"{where}: {choice.key}"
        raise RecipeError(f"{source}: {chosen!r} is not one of {', '.join(choice.configs)}")
    types = config_types(command, chosen)
    keys = set(valid_keys(types))
    elsewhere = {key: f"an option of {choice.key} {other}, not {chosen}" for other in choice.configs
                 if other != chosen for key in valid_keys(config_types(command, other)) if key not in keys}
    return parse_configs(types, section, argv, where=where, elsewhere=elsewhere)


def option_values(argv: Sequence[str], names: Iterable[str]) -> list[str]:
    """The values given to the options ``--name value`` or ``--name=value`` in ``argv``, in order."""
    values = []
    for i, arg in enumerate(argv):
        for name in names:
            if arg == f"--{name}" and i + 1 < len(argv):
                values.append(argv[i + 1])
            elif arg.startswith(f"--{name}="):
                values.append(arg.split("=", 1)[1])
    return values


def valid_keys(config_types: Sequence[type]) -> list[str]:
    """Every field the configs take, sorted."""
    return sorted({f.name for config_type in config_types for f in dataclasses.fields(config_type) if f.init})


def recipe_section(path: Optional[str], section: str) -> dict:
    """The section of a recipe file (empty without a file).

    Raises:
        RecipeError: The file is not YAML, or not a mapping of sections, or the section is missing
            or is not a mapping of keys to values.
    """
    if path is None:
        return {}
    try:
        recipe = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        raise RecipeError(f"{path} is not valid YAML: {_yaml_problem(error)}") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"{path} is not a recipe: it holds {_kind(recipe)}, not sections such as "
                          f"{', '.join(f'{c}:' for c in COMMANDS)}")
    if section not in recipe:
        raise RecipeError(f"{path} has no '{section}:' section (it has {sorted(map(str, recipe))})")
    options = recipe[section] if recipe[section] is not None else {}
    if not isinstance(options, dict):
        raise RecipeError(f"the '{section}:' section of {path} holds {_kind(options)}, not keys with values")
    return options


def parse_configs(config_types: Sequence[type], section: dict, argv: Sequence[str], *,
                  where: str = "the recipe", elsewhere: Optional[dict[str, str]] = None) -> tuple:
    """Build the configs from a recipe section, overridden by command-line options.

    Args:
        config_types: The configs' dataclasses.
        section: The recipe's keys and values.
        argv: Command-line options on top (``["--learning_rate", "1e-4"]``).
        where: Where the section comes from, in errors.
        elsewhere: Keys these configs do not take but others do, each with what to say of it
            (``{"beta": "an option of algorithm grpo, not rwsft"}``).

    Raises:
        RecipeError: A key or option that no config takes (the valid ones are listed), a value of
            the wrong type, or a combination the configs refuse.
    """
    keys = valid_keys(config_types)
    elsewhere = elsewhere or {}
    unknown = sorted(set(section) - set(keys))
    if unknown:
        raise RecipeError(_unknown_message(f"unknown key(s) in {where}", unknown, keys, "", elsewhere))
    parser = _Parser(config_types)
    parser.allow_abbrev = False  # "--lora_alph" is a typo to report, not lora_alpha
    options = {action.dest: action for action in parser._actions if f"--{action.dest}" in action.option_strings}
    parser.set_defaults(**{key: _checked(options[key], value, where) for key, value in section.items()})
    try:
        *configs, remaining = parser.parse_args_into_dataclasses(args=list(argv), return_remaining_strings=True)
    except RecipeError:
        raise
    except ValueError as error:  # a config's own checks, e.g. options that exclude each other
        names = " + ".join(config_type.__name__ for config_type in config_types)
        raise RecipeError(f"the {names} configuration: {error}") from None
    if remaining:
        options = [arg for arg in remaining if arg.startswith("--")] or remaining
        raise RecipeError(_unknown_message("unknown command-line option(s)", options, keys, "--", elsewhere))
    return tuple(configs)


class _Parser(HfArgumentParser):
    """The configs' argument parser, whose errors are one :class:`RecipeError` line.

    It raises that error instead of printing a usage text and exiting.
    """

    def error(self, message: str):
        raise RecipeError(f"command line: {message}")


def _checked(action: argparse.Action, value: object, where: str):
    """A recipe value converted as the command line would convert it.

    A value that does not convert raises a :class:`RecipeError` naming the key, the value and what
    it should be.
    """
    def wrong() -> RecipeError:
        return RecipeError(f"{where}: {action.dest}: {value!r} is not {_expected(action)}")

    text_like = action.type in (None, str)  # a field typed as a union (text, list or mapping) parses as text
    if value is None or (isinstance(value, (dict, list)) and text_like and action.nargs not in ("+", "*")):
        return value
    if action.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]
        return [_converted(action, item, wrong) for item in items]
    if isinstance(value, (dict, list)):
        raise wrong()
    return _converted(action, value, wrong)


def _converted(action: argparse.Action, value: object, wrong: Callable[[], RecipeError]):
    if isinstance(value, (dict, list)) or (isinstance(value, bool) and action.type in (int, float)):
        raise wrong()
    try:
        converted = action.type(value if isinstance(value, (str, bool)) else str(value)) if action.type else value
    except (ValueError, TypeError, AttributeError, argparse.ArgumentTypeError):
        raise wrong() from None
    if action.choices is not None and converted not in action.choices:
        raise wrong()
    return converted


def _expected(action: argparse.Action) -> str:
    if action.choices is not None:
        return f"one of {', '.join(map(str, action.choices))}"
    kind = {int: "an integer", float: "a number", str: "text"}.get(action.type, "true or false")
    return f"a list of {kind.split(' ', 1)[-1]} values" if action.nargs in ("+", "*") else kind


def _kind(value: object) -> str:
    kind = {dict: "a mapping", list: "a list", str: "the text"}.get(type(value), "the value")
    return f"{kind} {str(value)[:40]!r}" if isinstance(value, str) else f"{kind} {str(value)[:40]}"


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def _unknown_message(what: str, unknown: Sequence[str], keys: Sequence[str], prefix: str,
                     elsewhere: dict[str, str]) -> str:
    hints = []
    for name in unknown:
        key = name.lstrip("-").split("=")[0]
        close = difflib.get_close_matches(key, keys, n=1)
        if key in elsewhere:
            hints.append(f"{name} ({elsewhere[key]})")
        elif close:
            hints.append(f"{name} (did you mean {prefix}{close[0]}?)")
        else:
            hints.append(name)
    return f"{what}: {', '.join(hints)}. Valid keys: {', '.join(keys)}"
