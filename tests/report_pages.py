"""Result frames for the report tests: hostile and long content, and one of vaswani's size at k=100."""
import numpy as np
import pandas as pd

HOSTILE = ['<script>window.pwned = 1</script>', '<img src=x onerror="window.pwned = 2">', "<b>bold</b>",
           '"><svg onload="window.pwned = 3">']
LONG_TOKEN = "https://example.org/" + "a-very-long-path-segment/" * 30 + "?q=" + "x" * 200


def hostile_results(queries: int = 12, docs: int = 8, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Results in which every field carries HTML or an unbroken token, over several queries; and qrels."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(queries):
        qid = HOSTILE[q % len(HOSTILE)] + f"q{q}" if q % 3 == 0 else f"q{q}"
        query = f"{HOSTILE[(q + 1) % len(HOSTILE)]} query {q} {LONG_TOKEN if q == 1 else ''}"
        for d in range(docs):
            p = rng.dirichlet([1, 1, 1])
            rows.append({"qid": qid, "query": query,
                         "docno": HOSTILE[d % len(HOSTILE)] + f"-{q}-{d}" if d % 2 else f"{LONG_TOKEN}-{q}-{d}",
                         "text": f"{HOSTILE[d % len(HOSTILE)]} {LONG_TOKEN} " + "words of the document " * 20,
                         "explanation": f"{HOSTILE[(d + 2) % len(HOSTILE)]} because {LONG_TOKEN}",
                         "label": int(p.argmax()), "score": float(p @ [0, 1, 2]), "probabilities": tuple(p),
                         "forced": d == 3, "tokens": 20, "samples": 1, "rank": d,
                         "first_stage_rank": (d * 5) % docs, "first_stage_score": 20.0 - d})
    frame = pd.DataFrame(rows)
    qrels = frame.iloc[::2][["qid", "docno"]].assign(label=rng.integers(0, 3, len(frame.iloc[::2])))
    return frame, qrels


def vaswani_scale(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """93 queries x 100 documents, explanations of ~200 characters and documents of ~2,000; and qrels."""
    rng = np.random.default_rng(seed)
    words = np.array(["microwave", "dielectric", "constant", "measurement", "of", "the", "liquids", "transistor",
                      "amplifier", "noise", "circuit", "frequency", "and", "in", "a"])
    pairs = 93 * 100
    p = rng.dirichlet([1, 1, 1], size=pairs)
    texts = [" ".join(row)[:2000] for row in rng.choice(words, size=(400, 260))]  # drawn from 400 documents
    explanations = [" ".join(row)[:200] for row in rng.choice(words, size=(400, 30))]
    frame = pd.DataFrame({
        "qid": np.repeat(np.arange(1, 94), 100).astype(str),
        "query": "measurement of dielectric constant of liquids by the use of microwave techniques",
        "docno": np.arange(1, pairs + 1).astype(str), "text": [texts[i % 400] for i in range(pairs)],
        "explanation": [explanations[i % 400] for i in range(pairs)], "label": p.argmax(axis=1),
        "score": p @ [0, 1, 2], "probabilities": list(map(tuple, p)), "forced": np.arange(pairs) % 17 == 0,
        "tokens": 40, "samples": 1, "rank": np.tile(np.arange(100), 93),
        "first_stage_rank": rng.integers(0, 100, pairs), "first_stage_score": rng.normal(10, 1, pairs)})
    qrels = frame.sample(frac=0.05, random_state=seed)[["qid", "docno"]].assign(label=1)
    return frame, qrels
