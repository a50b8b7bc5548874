"""A synthetic relevance task that a tiny model can learn, and a teacher that knows its rule.

A query asks ``about <topic>``: each of three topics needs a depth (0, 1, 2). A document opens with
a word that goes to a depth (three words per depth), then filler words. The label needs both:
``clip(depth of the document's word - depth the topic needs + 1, 0, 2)``. The teacher's
explanation states both depths, then the label follows — a chain of small steps (copy a word,
look up its depth) that a small model learns, where the direct answer would need a two-word lookup.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from pyterrier_reasonrank.prompts import format_queries


@dataclass
class Vocabulary:
    topics: list[str]  # topics[u] needs depth u
    words: list[str]  # words[3 * v : 3 * v + 3] go to depth v
    fillers: list[str]

    @classmethod
    def of(cls, tokenizer) -> "Vocabulary":
        """Words that are single tokens (after a space) in the tokenizer, so the task is about
        depths, not spelling."""
        words = sorted(t[1:] for t in tokenizer.get_vocab()
                       if t.startswith("Ġ") and t[1:].isalpha() and t[1:].islower() and len(t) >= 5)
        words = [w for w in words if w not in ("about", "depth", "needs", "goes")]
        return cls(words[:3], words[3:12], words[12:20])

    def depths(self, query: str, document: str) -> tuple[int, int]:
        return self.words.index(document.split()[0]) // 3, self.topics.index(query.split()[-1])

    def label(self, query: str, document: str) -> int:
        offered, needed = self.depths(query, document)
        return min(2, max(0, offered - needed + 1))

    def explanation(self, query: str, document: str) -> str:
        offered, needed = self.depths(query, document)
        return f"{document.split()[0]} goes to depth {offered}; {query.split()[-1]} needs depth {needed}."

    def queries(self, question: str) -> list[str]:
        """The search queries for a question: its topic, then the topic and its depth."""
        topic = question.split()[-1]
        return [topic, f"{topic} depth {self.topics.index(topic)}"]


def make_pairs(vocabulary: Vocabulary, n: int, seed: int, prefix: str = "p") -> pd.DataFrame:
    """``n`` random pairs with their gold labels: ``qid, docno, query, text, gold_label``."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        query = f"about {rng.choice(vocabulary.topics)}"
        words = [rng.choice(vocabulary.words)] + [rng.choice(vocabulary.fillers) for _ in range(5)]
        text = " ".join(words)
        rows.append({"qid": f"{prefix}{i}", "docno": f"{prefix}{i}-d", "query": query, "text": text,
                     "gold_label": vocabulary.label(query, text)})
    return pd.DataFrame(rows)


def ranking_task(vocabulary: Vocabulary, seed: int, queries_per_topic: int = 2):
    """Held-out queries, each with one document per depth word: (result frame to re-rank, qrels)."""
    rng = random.Random(seed)
    rows, qrels = [], []
    for t, topic in enumerate(vocabulary.topics):
        for k in range(queries_per_topic):
            qid = f"h{t}-{k}"
            words = list(vocabulary.words)
            rng.shuffle(words)
            for rank, word in enumerate(words):
                text = " ".join([word] + [rng.choice(vocabulary.fillers) for _ in range(5)])
                docno = f"{qid}-{word}"
                rows.append({"qid": qid, "query": f"about {topic}", "docno": docno, "text": text,
                             "score": float(-rank), "rank": rank})
                qrels.append({"qid": qid, "docno": docno, "label": vocabulary.label(f"about {topic}", text)})
    return pd.DataFrame(rows), pd.DataFrame(qrels)


_PAIR = re.compile(r"Query:\n(?P<query>.*?)\n\nDocument:\n(?P<document>.*?)(?:\n\n|$)", re.DOTALL)


def teacher_answer(vocabulary: Vocabulary, messages: list[dict]) -> str:
    """What a teacher that knows the rule answers to the project's judging or query-generation prompt."""
    if messages[-1]["content"].startswith("Question:\n"):
        return format_queries(vocabulary.queries(messages[-1]["content"].removeprefix("Question:\n")))
    match = _PAIR.search(messages[-1]["content"])
    query, document = match["query"], match["document"]
    return f"Explanation: {vocabulary.explanation(query, document)}\nRelevance: {vocabulary.label(query, document)}"


def write_annotations(vocabulary: Vocabulary, path: Path, n: int, seed: int = 21) -> Path:
    """``n`` synthetic pairs annotated by the rule, as the JSONL that ``annotate`` writes."""
    records = [{"qid": r.qid, "docno": r.docno, "query": r.query, "text": r.text,
                "label": vocabulary.label(r.query, r.text), "explanation": vocabulary.explanation(r.query, r.text)}
               for r in make_pairs(vocabulary, n, seed=seed).itertuples()]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def training_recipe(folder: Path, model, annotations: Path) -> Path:
    """A recipe of small distill and GRPO refine runs (checkpoints every 2 steps) on ``annotations``:
    distillation (explain mode) for 2 epochs in batches of 4 per process, GRPO for 4 steps."""
    common = {"model_name_or_path": str(model), "train_file": str(annotations), "use_peft": True, "lora_r": 4,
              "lora_alpha": 8, "lora_target_modules": ["q_proj", "v_proj"], "max_doc_tokens": 64,
              "per_device_train_batch_size": 4, "learning_rate": 1e-3, "logging_steps": 1, "save_strategy": "steps",
              "save_steps": 2, "report_to": "none", "disable_tqdm": True}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "distill": {**common, "output_dir": str(folder / "distill"), "num_train_epochs": 2, "direct_fraction": 0.0},
        "refine": {**common, "output_dir": str(folder / "grpo"), "algorithm": "grpo", "max_steps": 4,
                   "num_generations": 4, "max_completion_length": 8, "rewards": ["label", "format"]},
    }))
    return path


def printed_result(stdout: str) -> dict:
    """The JSON a ``reasonrank-train`` command prints last (after the trainer's log lines)."""
    return json.loads(stdout[stdout.rindex("\n{\n") + 1:] if "\n{\n" in stdout else stdout)
