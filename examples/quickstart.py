"""Quickstart: BM25 against BM25 >> ReasonRanker on the bundled demo collection, and explanations.

python examples/quickstart.py                      # the default model (downloaded from the Hub)
REASONRANK_MODEL=/path/to/model python examples/quickstart.py
REASONRANK_ADAPTER=runs/tiny/refine python examples/quickstart.py
"""
import os

import pyterrier as pt

from pyterrier_reasonrank import ReasonRanker
from pyterrier_reasonrank.demo import DemoCollection
from pyterrier_reasonrank.indexing import bm25

collection = DemoCollection()
topics, qrels = collection.get_topics(), collection.get_qrels()

first_stage = bm25(collection, name=None, num_results=10)  # pyterrier_pisa, indexed on the fly
ranker = ReasonRanker(os.environ.get("REASONRANK_MODEL"), adapter=os.environ.get("REASONRANK_ADAPTER"), verbose=True)
pipeline = first_stage >> pt.text.get_text(collection, "text") >> ranker

print(pt.Experiment([first_stage, pipeline], topics, qrels, [pt.measures.nDCG @ 10, pt.measures.AP],
                    names=["BM25", "BM25 >> ReasonRanker"]))

results = pipeline(topics.head(1))
for row in results.head(3).itertuples():
    print(f"{row.rank + 1}. {row.docno} label {row.label} score {row.score:.3f}: {row.explanation}")
