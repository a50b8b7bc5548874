"""BRIGHT as ir_datasets reads it, built from the real queries and qrels in ../shared/data/bright
(or, without that folder, from the queries ir_datasets downloads, as for any user).

ir_datasets' BRIGHT loader reads parquet files (queries with gold and excluded document ids,
reasoning variants, documents). BRIGHT's documents are not available here, so the documents are
placeholders — for the ids the chosen queries' judgements name, and some others — whose text is
the words of their id. Everything else goes through ir_datasets' own code.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import ir_datasets

REASONING_SOURCES = ("Gemini-1.0_reason", "claude-3-opus_reason", "gpt4_reason", "grit_reason", "llama3-70b_reason")


def _cache_paths() -> dict:
    return json.loads((Path(ir_datasets.__file__).parent / "etc" / "downloads.json").read_text())["bright"]


def shared_topics(shared: Path, domain: str) -> list[dict]:
    """BRIGHT's queries of a domain from ../shared, or else as ir_datasets downloads them."""
    path = shared / "data" / "bright" / f"topics.bright-{domain}-original.jsonl.gz"
    if path.exists():
        with gzip.open(path, "rt") as lines:
            return [json.loads(line) for line in lines]
    import pyarrow.parquet as pq

    dataset = ir_datasets.load(f"bright/{domain}")
    next(iter(dataset.queries_iter()))  # downloads the queries file, nothing else
    return pq.read_table(Path(ir_datasets.util.home_path()) / "bright" / _cache_paths()[f"{domain}/queries"]
                         ["cache_path"]).to_pylist()


def shared_qrels(shared: Path, domain: str) -> set[tuple[str, str]]:
    """BRIGHT's positive judgements of a domain: its qrels file in ../shared, or else the gold ids of its queries."""
    path = shared / "data" / "bright" / f"qrels.bright-{domain}.txt"
    if not path.exists():
        return {(topic["id"], doc) for topic in shared_topics(shared, domain) for doc in topic["gold_ids"]}
    lines = path.read_text().splitlines()
    return {(qid, docno) for qid, _, docno, label in (line.split() for line in lines) if int(label) > 0}


def excluded(topic: dict) -> list[str]:
    return [doc for doc in topic["excluded_ids"] if doc != "N/A"]


def build(home: Path, shared: Path, domain: str, *, queries_with_documents: int, matching_excluded: int = 5) -> None:
    """Write the files of ``irds:bright/<domain>`` under ``home`` (an IR_DATASETS_HOME).

    There is a document for every gold id and for the excluded ids of the first
    ``queries_with_documents`` queries. For those queries, the gold documents hold the query's
    text, and ``matching_excluded`` of the excluded ones hold it twice — so BM25 ranks excluded
    documents first, and evaluation must remove them. The other documents hold the words of their id.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    cache_paths = _cache_paths()
    topics = shared_topics(shared, domain)
    folder = home / "bright"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(topics), folder / cache_paths[f"{domain}/queries"]["cache_path"])
    for source in REASONING_SOURCES:
        pq.write_table(pa.Table.from_pylist([{"id": t["id"], "reasoning": ""} for t in topics]),
                       folder / cache_paths[f"{domain}/{source}/queries"]["cache_path"])
    chosen = topics[:queries_with_documents]
    content = {doc: " ".join(doc.replace("/", " ").replace("_", " ").replace(".", " ").split())
               for doc in {d for t in topics for d in t["gold_ids"]} | {d for t in chosen for d in excluded(t)}}
    for topic in chosen:
        content.update({doc: f"{topic['query']} {topic['query']}" for doc in excluded(topic)[:matching_excluded]})
        content.update({doc: topic["query"] for doc in topic["gold_ids"]})
    documents = [{"id": doc, "content": text} for doc, text in sorted(content.items())]
    pq.write_table(pa.Table.from_pylist(documents), folder / cache_paths[f"{domain}/docs"]["cache_path"])
