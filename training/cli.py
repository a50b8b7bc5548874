"""The ``reasonrank-train`` command: ``annotate``, ``distill`` and ``refine``, each from a YAML recipe."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from pyterrier_reasonrank.errors import debugging, run_command
from pyterrier_reasonrank.redaction import SECRET_FIELDS, config_secrets, known_secrets, scrub

from .recipes import COMMANDS, option_values, read_recipe


def usage() -> str:
    """The usage text, made from the command registry."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    return (f"reasonrank-train {{{','.join(COMMANDS)}}} [--config RECIPE.yaml] [--key value ...] [--debug]\n\n"
            + "\n".join(lines) + "\n\nEach command reads its section of the recipe; options override it "
            "(reasonrank-train COMMAND --help lists them).\n--debug (or REASONRANK_DEBUG=1) shows the full "
            "traceback of an error.\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``reasonrank-train``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debugging(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return 0
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


if __name__ == "__main__":
    sys.exit(main())
