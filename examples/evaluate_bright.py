"""Evaluate a ReasonRanker on BRIGHT: nDCG@10 per domain and on average, with significance tests.

BM25's top 100 of each domain is re-ranked, and the documents BRIGHT excludes are removed before scoring.

    python examples/evaluate_bright.py --adapter runs/paper-3b/refine
    python examples/evaluate_bright.py --domains biology leetcode --k 20 --model /path/to/model

BRIGHT's documents are downloaded by ir_datasets on first use (irds:bright/<domain>). The
command-line equivalent: reasonrank evaluate --dataset bright --k 100 --adapter ...
"""
import argparse

from pyterrier_reasonrank import ReasonRanker
from pyterrier_reasonrank.evaluation import BRIGHT_DOMAINS, evaluate, write_outputs

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--model", default=None)
parser.add_argument("--adapter", default=None)
parser.add_argument("--domains", nargs="+", default=list(BRIGHT_DOMAINS), choices=BRIGHT_DOMAINS)
parser.add_argument("--k", type=int, default=100)
parser.add_argument("--num-queries", type=int, default=None)
parser.add_argument("--output", default="bright-evaluation")
args = parser.parse_args()

ranker = ReasonRanker(args.model, adapter=args.adapter, verbose=True)
evaluation = evaluate([f"irds:bright/{domain}" for domain in args.domains], {"ReasonRanker": ranker}, k=args.k,
                      num_queries=args.num_queries)
write_outputs(evaluation, args.output)
headline = evaluation.table.pivot_table(index="dataset", columns="name", values="nDCG@10", sort=False)
print(headline.round(4).to_string())
