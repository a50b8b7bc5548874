"""The ``reasonrank-train`` command: ``annotate``, ``distill`` and ``refine``, each from a YAML recipe.

``reasonrank-train recipes`` lists the bundled recipes and accelerate configs, and
``reasonrank-train recipes --path NAME`` prints where one is installed.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from pyterrier_reasonrank.errors import debugging, run_command
from pyterrier_reasonrank.redaction import SECRET_FIELDS, config_secrets, known_secrets, scrub

from .recipes import COMMANDS, RecipeError, bundled_listing, bundled_path, option_values, read_recipe


def usage() -> str:
    """The usage text, made from the command registry."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    return (f"reasonrank-train {{{','.join(COMMANDS)}}} [--config RECIPE] [--key value ...] [--debug]\n"
            "reasonrank-train recipes [--path NAME]\n\n"
            + "\n".join(lines) + f"\n  {'recipes':<{width}}  the bundled recipes and accelerate configs; --path NAME: "
            "where one is\n\nEach command reads its section of the recipe (a file, or a bundled recipe's name); "
            "options override it\n(reasonrank-train COMMAND --help lists them).\n--debug (or REASONRANK_DEBUG=1) "
            "shows the full traceback of an error.\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``reasonrank-train``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debugging(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return 0
    if argv[:1] == ["recipes"]:
        return run_command("reasonrank-train recipes", lambda: recipes(argv[1:]), debug=debug)
    if not argv or argv[0] not in COMMANDS:
        print(usage(), file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument("--config", default=None)
    known, rest = config_parser.parse_known_args(rest)
    # What a message may quote: the secrets on the command line until the configs are read, then theirs.
    secrets = list(known_secrets(*option_values(rest, SECRET_FIELDS)))

    def run() -> int:
        configs = read_recipe(command, known.config, rest)
        secrets[:] = config_secrets(*configs)
        from pyterrier_reasonrank import training

        result = getattr(training, command)(*configs)
        from .runcard import is_main_process

        if is_main_process():  # once, under accelerate launch
            print(scrub(json.dumps(result, indent=2, default=str), secrets))
        return 0

    return run_command(f"reasonrank-train {command}", run, debug=debug, scrub=lambda line: scrub(line, secrets))


def recipes(argv: Sequence[str]) -> int:
    """``reasonrank-train recipes``: list the bundled files; with ``--path NAME``, print where that one is.

    Raises:
        RecipeError: An argument other than ``--path NAME``, or a name that is not bundled.
    """
    parser = _RecipesParser(prog="reasonrank-train recipes", description="List the bundled recipes and "
                            "accelerate configs, or print where one is installed.")
    parser.add_argument("--path", metavar="NAME", help="a bundled file's name, e.g. paper-3b or accelerate/ddp")
    options = parser.parse_args(argv)
    if options.path is None:
        print(bundled_listing(), end="")
    else:
        print(bundled_path(options.path))
    return 0


class _RecipesParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise RecipeError(f"{message} (usage: reasonrank-train recipes [--path NAME])")


if __name__ == "__main__":
    sys.exit(main())
