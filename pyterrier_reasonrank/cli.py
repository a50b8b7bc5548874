"""The ``reasonrank`` command: ``demo`` and ``evaluate``."""
from __future__ import annotations

import argparse
import inspect
import sys
import textwrap
from typing import Optional, Sequence

from .errors import debugging, run_command
from .loading import DEFAULT_MODEL
from .prompts import DEFAULT_MAX_DOC_TOKENS, DEFAULT_MAX_QUERY_TOKENS
from .ranker import ReasonRanker
from .redaction import known_secrets, scrub

RANKER_OPTIONS = {"batch-size": "pairs judged at once", "max-new-tokens": "explanation budget in tokens",
                  "max-query-tokens": "queries cut to this many tokens",
                  "max-doc-tokens": "documents cut to this many tokens"}
"""ReasonRanker's options that the commands take; unless given, the ranker's own defaults apply."""
_LIBRARY_DEFAULTS = {"max-query-tokens": DEFAULT_MAX_QUERY_TOKENS, "max-doc-tokens": DEFAULT_MAX_DOC_TOKENS}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``reasonrank``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debugging(argv)
    parser = argparse.ArgumentParser(prog="reasonrank", description="A reasoning re-ranker for PyTerrier.",
                                     epilog="--debug (or REASONRANK_DEBUG=1) shows the full traceback of an error.")
    commands = parser.add_subparsers(dest="command", required=True)
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", default=None,
                       help=f"Hub id or local directory (default: {DEFAULT_MODEL}, or the adapter's base model)")
    model.add_argument("--adapter", default=None, help="PEFT adapter (Hub id or directory)")
    defaults = inspect.signature(ReasonRanker).parameters  # one place for the ranker's defaults: the ranker
    for option, help_text in RANKER_OPTIONS.items():
        default = defaults[option.replace("-", "_")].default
        shown = default if default is not None else f"the student's, else {_LIBRARY_DEFAULTS[option]}"
        model.add_argument(f"--{option}", type=int, default=None, help=f"{help_text} (default: {shown})")
    model.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")

    demo = commands.add_parser("demo", parents=[model], help="compare BM25 with BM25 >> ReasonRanker in pt.Experiment",
                               description="Compare BM25 with BM25 >> ReasonRanker in pt.Experiment and show "
                                           "a few explanations.")
    demo.add_argument("--dataset", default=None,
                      help="a PyTerrier dataset such as irds:vaswani (default: the bundled demo collection)")
    demo.add_argument("--mode", choices=["explain", "direct"], default="explain")
    demo.add_argument("--k", type=int, default=10, help="documents re-ranked per query (default: 10)")
    demo.add_argument("--num-queries", type=int, default=None,
                      help="use only the first N queries (default: all of the bundled collection, 10 of a dataset)")
    demo.add_argument("--explanations", type=int, default=3, help="explanations shown for the first query")

    evaluate = commands.add_parser(
        "evaluate", parents=[model], help="evaluate re-ranking against the first stage, with significance tests",
        description="Run pt.Experiment with the first stage alone and re-ranked pipelines, with significance "
                    "tests against the first stage; write the table (CSV, Markdown), TREC runs and a PNG of "
                    "the differences. BRIGHT: --dataset bright (its 12 domains) or irds:bright/<domain>; "
                    "documents it excludes (qrels -100) are removed before scoring.")
    evaluate.add_argument("--dataset", action="append", required=True,
                          help="dataset id (repeatable), e.g. irds:vaswani, irds:bright/biology, or bright")
    evaluate.add_argument("--first-stage", choices=["bm25"], default="bm25")
    evaluate.add_argument("--k", type=int, default=100, help="first-stage depth re-ranked (default: 100)")
    evaluate.add_argument("--modes", nargs="+", choices=["explain", "direct"], default=["explain"],
                          help="re-ranking modes to evaluate (default: explain)")
    evaluate.add_argument("--cascade", type=int, default=None, metavar="DEPTH",
                          help="also evaluate direct mode over all k, then explain mode over its top DEPTH")
    evaluate.add_argument("--num-queries", type=int, default=None, help="use the first N queries of each dataset")
    evaluate.add_argument("--query-field", default=None, help="topics field used as the query (BRIGHT: text)")
    evaluate.add_argument("--output", default="reasonrank-evaluation", help="folder for the results")
    evaluate.add_argument("--report", action="store_true",
                          help="also write report.html: the explanations of the first re-ranked system")
    args = parser.parse_args(argv)
    # The Hub client logs each retry of an unreachable server; the error below says it once.
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()
    return run_command(f"reasonrank {args.command}", lambda: _demo(args) if args.command == "demo" else _evaluate(args),
                       debug=debug, scrub=lambda line: scrub(line, known_secrets()))


def _ranker(args: argparse.Namespace, mode: str) -> ReasonRanker:
    given = {name: getattr(args, name) for name in (option.replace("-", "_") for option in RANKER_OPTIONS)}
    return ReasonRanker(args.model, adapter=args.adapter, mode=mode, device=args.device, verbose=True,
                        **{name: value for name, value in given.items() if value is not None})


def _demo(args: argparse.Namespace) -> int:
    import pandas as pd

    from .demo import run_demo

    num_queries = args.num_queries if args.num_queries is not None or args.dataset is None else 10
    result = run_demo(_ranker(args, args.mode), dataset=args.dataset, k=args.k, num_queries=num_queries)
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
    from .display import write_report
    from .evaluation import cascade, dataset_ids, evaluate, write_outputs
    from .outputs import writable_folder

    # The cheap checks first: the datasets exist and the results can be written.
    for dataset_id in dataset_ids(args.dataset):
        get_dataset(dataset_id)
    writable_folder(args.output)
    rankers = {mode: _ranker(args, mode) for mode in args.modes}
    if args.cascade:
        rankers[f"direct % {args.cascade} >> explain"] = cascade(
            rankers.get("direct") or _ranker(args, "direct"), rankers.get("explain") or _ranker(args, "explain"),
            args.cascade)
    for ranker in rankers.values():
        if isinstance(ranker, ReasonRanker):
            ranker.load()  # fail fast on a missing model, before any indexing
    evaluation = evaluate(args.dataset, rankers, k=args.k, num_queries=args.num_queries, query_field=args.query_field)
    files = write_outputs(evaluation, args.output)
    if args.report:
        (dataset, name), run = next((key, run) for key, run in evaluation.runs.items() if key[1] != "BM25")
        files["report"] = write_report(run, f"{args.output}/report.html", title=f"{name} on {dataset}")
    with pd.option_context("display.width", 220, "display.max_columns", 20):
        print(evaluation.table.to_string(index=False))
    print("\n" + "\n".join(f"{kind}: {path}" for kind, path in files.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
