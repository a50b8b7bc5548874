"""The graded-lists task of the refinement benchmark (``benchmarks/refinement.py``).

This file was written and committed before the benchmark had run, and is not changed after; the
benchmark's results are reported on this task as it is defined here.

Why this task
-------------
The learning tests' task (``tests/synthetic.py``) ranks nine documents per query whose labels are
spread about evenly, so a student whose labels are right ranks perfectly: per-pair label accuracy
says everything. A re-ranker's input is not like that. Among a first stage's top ten a few
documents are relevant, one perhaps highly, and most are not; nDCG@10 then depends on where the
one highly relevant document lands and on the margins between the few relevant documents and
the many others (the score is the expected label, so a confident 0 and a hesitant 0 rank
differently), while per-pair label accuracy is dominated by the many easy negatives. This task
keeps the synthetic task's lookup (a small model can learn it, a teacher that knows the rule
writes the explanations) and gives each query such a list.

The rule
--------
Five topics; topic ``u`` needs depth ``u`` (0-4). Twenty words, four per depth. A document is a
depth word followed by five filler words. The label compares the two depths::

    label = 2 if depth(word) == need(topic), 1 if they differ by one, else 0

The teacher's explanation states both depths, then the label follows
(``"<word> goes to depth 3; <topic> needs depth 2."``, ``Relevance: 1``).

The lists
---------
A query is ``"about <topic>"``. Its ten candidates are: one document at the needed depth
(label 2), three at an adjacent depth (label 1), six further away (label 0), each word drawn at
random among the words of such depths and each filler at random, in random order. Every query
has the same make-up: a label-2 document, three label-1, six label-0 (60% negatives).

Splits are drawn with their own seeds: the distillation pairs (:data:`DISTILL_SEED`), the
refinement lists (:data:`REFINE_SEED`) and the held-out lists (:data:`HELD_OUT_SEED`); the
held-out lists are new draws of words and fillers, never trained on.

What is measured
----------------
On the held-out lists: nDCG@10 with the graded labels as qrels, and per-pair label accuracy
(the student's most probable label against the rule's), for each refinement arm and seed; the
spread over seeds; and each seed's paired difference against the ``label`` arm.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEPTHS = 5
WORDS_PER_DEPTH = 4
FILLERS = 8
LIST_MAKEUP = {2: 1, 1: 3, 0: 6}
"""How many candidates of each label a query's list holds."""
DISTILL_SEED, REFINE_SEED, HELD_OUT_SEED = 101, 202, 303
_RESERVED = ("about", "depth", "needs", "goes")  # words of the query and of the explanation


@dataclass
class GradedLists:
    """The task's words, in one tokenizer: each is a single token after a space."""

    topics: list[str]  # topics[u] needs depth u
    words: list[str]  # words[WORDS_PER_DEPTH * v: WORDS_PER_DEPTH * (v + 1)] go to depth v
    fillers: list[str]

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> GradedLists:
        """The first lowercase alphabetic single-token words (5 letters or more), in sorted order."""
        words = sorted(t[1:] for t in tokenizer.get_vocab()
                       if t.startswith("Ġ") and t[1:].isalpha() and t[1:].islower() and len(t) >= 5)
        words = [w for w in words if w not in _RESERVED]
        n = DEPTHS * WORDS_PER_DEPTH
        return cls(words[:DEPTHS], words[DEPTHS:DEPTHS + n], words[DEPTHS + n:DEPTHS + n + FILLERS])

    def depth(self, word: str) -> int:
        """The depth a word goes to."""
        return self.words.index(word) // WORDS_PER_DEPTH

    def need(self, query: str) -> int:
        """The depth a query's topic needs."""
        return self.topics.index(query.split()[-1])

    def label(self, query: str, document: str) -> int:
        """The rule: 2 at the needed depth, 1 one depth away, 0 further."""
        gap = abs(self.depth(document.split()[0]) - self.need(query))
        return 2 if gap == 0 else 1 if gap == 1 else 0

    def explanation(self, query: str, document: str) -> str:
        """The teacher's explanation: both depths, in one sentence."""
        word, topic = document.split()[0], query.split()[-1]
        return f"{word} goes to depth {self.depth(word)}; {topic} needs depth {self.need(query)}."

    def words_with_label(self, need: int, label: int) -> list[str]:
        """The words whose documents get ``label`` for a topic that needs depth ``need``."""
        return [w for w in self.words if (2 if abs(self.depth(w) - need) == 0
                                          else 1 if abs(self.depth(w) - need) == 1 else 0) == label]


def lists(task: GradedLists, queries: int, seed: int, prefix: str) -> pd.DataFrame:
    """``queries`` queries with their ten candidates each, labelled by the rule.

    Returns:
        ``qid, query, docno, text, gold_label``, one row per candidate, in each query's random order.
    """
    rng = random.Random(seed)
    rows = []
    for q in range(queries):
        topic = rng.randrange(DEPTHS)
        query = f"about {task.topics[topic]}"
        candidates = [(rng.choice(task.words_with_label(topic, label)), label)
                      for label, count in LIST_MAKEUP.items() for _ in range(count)]
        rng.shuffle(candidates)
        for d, (word, label) in enumerate(candidates):
            text = " ".join([word] + [rng.choice(task.fillers) for _ in range(5)])
            rows.append({"qid": f"{prefix}{q}", "query": query, "docno": f"{prefix}{q}-d{d}", "text": text,
                         "gold_label": label})
    return pd.DataFrame(rows)


def annotated(task: GradedLists, frame: pd.DataFrame) -> list[dict]:
    """The candidates as the records ``reasonrank-train annotate`` writes, by a teacher that knows the rule."""
    return [{**row, "label": task.label(row["query"], row["text"]),
             "explanation": task.explanation(row["query"], row["text"]), "teacher": "rule"}
            for row in frame.to_dict("records")]


def write_jsonl(records: list[dict], path: Path) -> Path:
    """Write records as JSONL."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
