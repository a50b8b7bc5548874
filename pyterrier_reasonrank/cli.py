"""The ``reasonrank`` command."""
from __future__ import annotations

import argparse
import sys
import textwrap

from .backends.hf import DEFAULT_MODEL, ModelNotFoundError
from .ranker import ReasonRanker


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="reasonrank", description="A reasoning re-ranker for PyTerrier.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="compare BM25 with BM25 >> ReasonRanker in pt.Experiment",
                               description="Compare BM25 with BM25 >> ReasonRanker in pt.Experiment and show "
                                           "a few explanations.")
    demo.add_argument("--model", default=None,
                      help=f"Hub id or local directory (default: {DEFAULT_MODEL}, or the adapter's base model)")
    demo.add_argument("--adapter", default=None, help="PEFT adapter (Hub id or directory)")
    demo.add_argument("--dataset", default=None,
                      help="a PyTerrier dataset such as irds:vaswani (default: the bundled demo collection)")
    demo.add_argument("--mode", choices=["explain", "direct"], default="explain")
    demo.add_argument("--k", type=int, default=10, help="documents re-ranked per query (default: 10)")
    demo.add_argument("--num-queries", type=int, default=None,
                      help="use only the first N queries (default: all of the bundled collection, 10 of a dataset)")
    demo.add_argument("--batch-size", type=int, default=16)
    demo.add_argument("--max-new-tokens", type=int, default=128, help="explanation budget in tokens")
    demo.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    demo.add_argument("--explanations", type=int, default=3, help="explanations shown for the first query")
    args = parser.parse_args(argv)
    # The Hub client logs each retry of an unreachable server; the error below says it once.
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()
    try:
        return _demo(args)
    except ModelNotFoundError as error:
        print(f"reasonrank: {error}", file=sys.stderr)
        return 1


def _demo(args) -> int:
    import pandas as pd

    from .demo import run_demo

    num_queries = args.num_queries if args.num_queries is not None or args.dataset is None else 10
    ranker = ReasonRanker(args.model, adapter=args.adapter, mode=args.mode, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens, device=args.device, verbose=True)
    result = run_demo(ranker, dataset=args.dataset, k=args.k, num_queries=num_queries)
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


if __name__ == "__main__":
    sys.exit(main())
