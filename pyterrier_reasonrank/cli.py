"""The ``reasonrank`` command: ``demo`` and ``evaluate``."""
from __future__ import annotations

import argparse
import inspect
import sys
import textwrap
from typing import Optional, Sequence

from .backends import BACKENDS
from .errors import InputError, debugging, run_command
from .loading import DEFAULT_MODEL
from .numeric import non_negative_int, positive_int
from .prompts import DEFAULT_MAX_DOC_TOKENS, DEFAULT_MAX_QUERY_TOKENS
from .ranker import RANKER_MODES, SAMPLING_OPTIONS, ReasonRanker
from .redaction import known_secrets, scrub
from .student import Student

RANKER_OPTIONS = {"batch-size": "pairs judged at once", "max-new-tokens": "explanation budget in tokens",
                  "max-query-tokens": "queries cut to this many tokens",
                  "max-doc-tokens": "documents cut to this many tokens",
                  "samples": "explanations per pair, their label distributions averaged"}
"""ReasonRanker's options that the commands take; unless given, the ranker's own defaults apply."""
_LIBRARY_DEFAULTS = {"max-query-tokens": DEFAULT_MAX_QUERY_TOKENS, "max-doc-tokens": DEFAULT_MAX_DOC_TOKENS}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``reasonrank``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debugging(argv)
    parser = _Parser(prog="reasonrank", description="A reasoning re-ranker for PyTerrier.",
                     epilog="--debug (or REASONRANK_DEBUG=1) shows the full traceback of an error.")
    commands = parser.add_subparsers(dest="command", required=True)  # the commands' parsers are _Parsers too
    count = positive_int.parse  # every count and size: a positive integer, or a one-line error naming the option
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", default=None,
                       help=f"Hub id or local directory (default: {DEFAULT_MODEL}, or the adapter's base model)")
    model.add_argument("--adapter", default=None, help="PEFT adapter (Hub id or directory)")
    defaults = inspect.signature(ReasonRanker).parameters  # one place for the ranker's defaults: the ranker
    for option, help_text in RANKER_OPTIONS.items():
        default = defaults[option.replace("-", "_")].default
        shown = default if default is not None else f"the student's, else {_LIBRARY_DEFAULTS[option]}"
        model.add_argument(f"--{option}", type=count, default=None, help=f"{help_text} (default: {shown})")
    model.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    model.add_argument("--backend", choices=BACKENDS, default="transformers", help="where the model runs")
    model.add_argument("--store", default=None,
                       help="a judgement store (its directory): pairs judged before are read, not judged again")
    model.add_argument("--verbose", action="store_true",
                       help="show BM25's indexing log and the model's loading progress (quiet otherwise)")

    demo = commands.add_parser("demo", parents=[model], help="compare BM25 with BM25 >> ReasonRanker in pt.Experiment",
                               description="Compare BM25 with BM25 >> ReasonRanker in pt.Experiment and show "
                                           "a few explanations.")
    demo.add_argument("--dataset", default=None,
                      help="a PyTerrier dataset such as irds:vaswani (default: the bundled demo collection)")
    demo.add_argument("--mode", choices=RANKER_MODES, default="explain")
    demo.add_argument("--k", type=count, default=10, help="documents re-ranked per query (default: 10)")
    demo.add_argument("--num-queries", type=count, default=None,
                      help="use only the first N queries (default: all of the bundled collection, 10 of a dataset)")
    demo.add_argument("--explanations", type=non_negative_int.parse, default=3,
                      help="explanations shown for the first query")

    evaluate = commands.add_parser(
        "evaluate", parents=[model], help="evaluate re-ranking against the first stage, with significance tests",
        description="Run pt.Experiment with the first stage alone and re-ranked pipelines, with significance "
                    "tests against the first stage; write the table (CSV, Markdown), TREC runs and a PNG of "
                    "the differences. BRIGHT: --dataset bright (its 12 domains) or irds:bright/<domain>; "
                    "documents it excludes (qrels -100) are removed before scoring.")
    evaluate.add_argument("--dataset", action="append", required=True,
                          help="dataset id (repeatable), e.g. irds:vaswani, irds:bright/biology, or bright")
    evaluate.add_argument("--first-stage", choices=["bm25"], default="bm25")
    evaluate.add_argument("--k", type=count, default=100, help="first-stage depth re-ranked (default: 100)")
    evaluate.add_argument("--modes", nargs="+", choices=RANKER_MODES, default=["explain"],
                          help="re-ranking modes to evaluate (default: explain)")
    evaluate.add_argument("--cascade", type=count, default=None, metavar="DEPTH",
                          help="also evaluate direct mode over all k, then explain mode over its top DEPTH")
    evaluate.add_argument("--num-queries", type=count, default=None, help="use the first N queries of each dataset")
    evaluate.add_argument("--query-field", default=None, help="topics field used as the query (BRIGHT: text)")
    evaluate.add_argument("--output", default="reasonrank-evaluation", help="folder for the results")
    evaluate.add_argument("--report", action="store_true",
                          help="also write an explanation report (report-<dataset>-<system>.html, with the qrels) "
                               "for each re-ranked system that explains")
    evaluate.add_argument("--report-system", action="append", default=None, metavar="NAME",
                          help="write the report of this system instead (repeatable; e.g. explain, direct, or the "
                               "cascade's name); implies --report")
    evaluate.add_argument("--fusion", action="store_true",
                          help="also evaluate each re-ranker fused with the first stage (per-query min-max "
                               "normalised scores, interpolated at a weight from 0 to 1 by 0.1 chosen by nDCG@10 "
                               "with 5-fold cross-validation over queries); writes fusion.csv")
    evaluate.add_argument("--calibration", action="store_true",
                          help="also write calibration.csv (expected calibration error against the graded qrels) "
                               "and a reliability diagram per dataset")

    calibrate = commands.add_parser(
        "calibrate", parents=[model], help="fit the student's label temperature on judged pairs",
        description="Re-rank BM25's top k of held-out datasets with graded judgements, fit the temperature on "
                    "the label logits that makes the student's label distributions best match the judgements, "
                    "and save it in the student's settings (ReasonRanker uses it unless told otherwise).")
    calibrate.add_argument("--dataset", action="append", required=True, help="dataset id (repeatable)")
    calibrate.add_argument("--mode", choices=RANKER_MODES, default="explain")
    calibrate.add_argument("--k", type=count, default=20, help="first-stage depth re-ranked (default: 20)")
    calibrate.add_argument("--num-queries", type=count, default=None, help="use the first N queries of each dataset")
    calibrate.add_argument("--query-field", default=None, help="topics field used as the query (BRIGHT: text)")
    try:
        args = parser.parse_args(argv)
    except _CommandLineError as error:
        print(f"{error.prog}: {error}", file=sys.stderr)
        return 1
    # The Hub client logs each retry of an unreachable server; the error below says it once.
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()
    if not args.verbose:  # one progress bar (the ranker's) before the results, not the weights' loading too
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    command = {"demo": _demo, "evaluate": _evaluate, "calibrate": _calibrate}[args.command]
    return run_command(f"reasonrank {args.command}", lambda: command(args), debug=debug,
                       scrub=lambda line: scrub(line, known_secrets()))


class _CommandLineError(InputError):
    """An option the command line cannot take: said in one line by the command, without the usage text."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors (``--k 0``, an unknown option) are one line, as every other user error."""

    def error(self, message: str):
        raise _CommandLineError(self.prog, message)


def _ranker(args: argparse.Namespace, mode: str, student: Optional[Student] = None) -> ReasonRanker:
    """The ranker the options describe, in ``mode``; a command's rankers share one student (one copy of the weights)."""
    given = {name: getattr(args, name) for name in (option.replace("-", "_") for option in RANKER_OPTIONS)}
    unused = SAMPLING_OPTIONS if mode == "direct" else ()  # --samples is the other modes'
    student = student or Student(args.model, adapter=args.adapter, device=args.device, backend=args.backend)
    return ReasonRanker(student, mode=mode, store=args.store, verbose=True,
                        **{name: value for name, value in given.items() if value is not None and name not in unused})


def _calibrate(args: argparse.Namespace) -> int:
    import json

    from .calibrating import calibrate

    result = calibrate(_ranker(args, args.mode), args.dataset, k=args.k, num_queries=args.num_queries,
                       query_field=args.query_field, verbose=args.verbose)
    print(json.dumps(result, indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    import pandas as pd

    from .demo import run_demo

    num_queries = args.num_queries if args.num_queries is not None or args.dataset is None else 10
    result = run_demo(_ranker(args, args.mode), dataset=args.dataset, k=args.k, num_queries=num_queries,
                      verbose=args.verbose)
    pairs = len(result.reranked)
    print(f"\n{args.dataset or 'bundled demo collection'}: {result.reranked['qid'].nunique()} queries, "
          f"top {args.k} from BM25; re-ranking {pairs} documents took {result.seconds:.1f} s "
          f"({pairs / max(result.seconds, 1e-9):.1f} docs/s).\n")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(result.table.to_string(index=False))
    first = result.reranked[result.reranked["qid"] == result.reranked["qid"].iloc[0]]
    print(f"\nQuery {first['qid'].iloc[0]}: {first['query'].iloc[0]}")
    for row in first.head(args.explanations).itertuples():
        forced = " (label forced)" if row.forced else ""
        print(f"  {row.rank + 1}. {row.docno}  label {row.label}, score {row.score:.3f}{forced}")
        print(textwrap.indent(textwrap.fill(row.explanation or "(no explanation)", 96), "     "))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from .dataset import get_dataset
    from .display import model_label, student_facts
    from .evaluation import (
        cascade,
        dataset_ids,
        evaluate,
        fusion_table,
        write_calibration,
        write_outputs,
        write_reports,
    )
    from .outputs import writable_folder

    # The cheap checks first: the datasets exist and the results can be written.
    for dataset_id in dataset_ids(args.dataset):
        get_dataset(dataset_id)
    writable_folder(args.output)
    student = Student(args.model, adapter=args.adapter, device=args.device, backend=args.backend)
    rankers = {mode: _ranker(args, mode, student) for mode in args.modes}
    if args.cascade:
        rankers[f"direct % {args.cascade} >> explain"] = cascade(
            rankers.get("direct") or _ranker(args, "direct", student),
            rankers.get("explain") or _ranker(args, "explain", student), args.cascade)
    reported = _reported_systems(args, rankers)
    for ranker in rankers.values():
        if isinstance(ranker, ReasonRanker):
            ranker.load()  # fail fast on a missing model, before any indexing
    evaluation = evaluate(args.dataset, rankers, k=args.k, num_queries=args.num_queries, query_field=args.query_field,
                          fusion=args.fusion, verbose=args.verbose)
    about = student_facts(student)
    files = write_outputs(evaluation, args.output, model=model_label(about["model"], student.adapter), k=args.k)
    if args.calibration:
        files.update(write_calibration(evaluation, args.output))
    if reported:
        files.update(write_reports(evaluation, args.output, reported, about=about, k=args.k))
    with pd.option_context("display.width", 220, "display.max_columns", 20):
        print(evaluation.table.to_string(index=False))
        if args.fusion:
            print("\nFusion weights of the first stage, each fold's chosen on the other folds' queries:")
            print(fusion_table(evaluation).to_string(index=False))
    print("\n" + "\n".join(f"{kind}: {path}" for kind, path in files.items()))
    return 0


def _reported_systems(args: argparse.Namespace, rankers: dict) -> list[str]:
    """The systems whose explanations ``--report`` writes: those named, else every one that explains.

    Raises:
        InputError: A named system is not evaluated, or ``--report`` has no explaining system to report
            (a direct-mode report is written only when asked for by name).
    """
    if args.report_system:
        # A system by the name --modes gives it, or by its name in the table ("BM25 >> explain").
        named = [name if name in rankers else name.partition(" >> ")[2] for name in args.report_system]
        for given, name in zip(args.report_system, named):
            if name not in rankers:
                raise InputError(f"--report-system {given!r}: no such re-ranked system; the systems are "
                                 f"{list(rankers)}")
        return named
    if not args.report:
        return []
    explaining = [name for name in rankers if name != "direct"]
    if not explaining:
        raise InputError("--report: no re-ranked system writes explanations (--modes direct); add --modes explain "
                         "(or adaptive, or --cascade N), or ask for the direct mode's report with --report-system "
                         "direct")
    return explaining


if __name__ == "__main__":
    sys.exit(main())
