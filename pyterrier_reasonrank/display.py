"""Explanations people can read: result frames as per-query lists, in Jupyter and as HTML reports."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Optional, Union

import pandas as pd

from .prompts import LABEL_NAMES

_NEEDED = {"qid", "docno", "label", "score", "explanation"}

_STYLE = """<style>
.reasonrank { font-family: system-ui, sans-serif; font-size: 13px; line-height: 1.4; }
.reasonrank summary { cursor: pointer; margin: 6px 0; }
.reasonrank ol { margin: 2px 0 10px 0; padding-left: 28px; }
.reasonrank li { margin-bottom: 6px; }
.reasonrank .label { border-radius: 3px; padding: 0 5px; color: #fff; font-weight: 600; }
.reasonrank .l0 { background: #9e9e9e; } .reasonrank .l1 { background: #e69500; }
.reasonrank .l2 { background: #2e8540; }
.reasonrank .meta { color: #555; }
.reasonrank .explanation { margin-left: 4px; }
.reasonrank .opening { color: #666; font-size: 12px; margin-left: 4px; }
</style>"""


class ReasonRankResults(pd.DataFrame):
    """The frame a :class:`~pyterrier_reasonrank.ReasonRanker` returns: a DataFrame shown as a list per query.

    It is an ordinary pandas DataFrame (every PyTerrier and pandas operation works on it) that
    Jupyter shows as a readable list per query — rank, docno, label, score, explanation and the
    document's opening. ``pd.DataFrame(results)`` shows it as a table.
    """

    @property
    def _constructor(self):
        return ReasonRankResults

    def _repr_html_(self) -> Optional[str]:
        if not _NEEDED <= set(self.columns):
            return super()._repr_html_()
        return explanations_html(self)


def explanations_html(results: pd.DataFrame, *, max_queries: Optional[int] = 10, max_docs: Optional[int] = 10,
                      text_field: str = "text", opening_chars: int = 240) -> str:
    """An HTML fragment listing, per query, the ranked documents with label, score and explanation.

    Args:
        results: A ReasonRanker result frame (``qid, docno, label, score, explanation``; ``query``,
            ``rank``, ``forced`` and the text field are shown when present).
        max_queries: Queries shown (``None``: all).
        max_docs: Documents shown per query (``None``: all).
        text_field: The column whose opening is shown under each explanation.
        opening_chars: How much of the document is shown.
    """
    missing = sorted(_NEEDED - set(results.columns))
    if missing:
        raise ValueError(f"not a ReasonRanker result frame: missing column(s) {missing}")
    order = ["qid", "rank"] if "rank" in results.columns else ["qid"]
    frame = pd.DataFrame(results).sort_values(order, kind="stable")
    qids = list(dict.fromkeys(frame["qid"]))
    parts = ['<div class="reasonrank">', _STYLE]
    for qid in qids[:max_queries]:
        group = frame[frame["qid"] == qid]
        query = f" {html.escape(str(group['query'].iloc[0]))}" if "query" in group.columns else ""
        parts.append(f"<details open><summary><b>{html.escape(str(qid))}</b>{query}</summary><ol>")
        for row in group.head(max_docs).to_dict("records"):
            parts.append(_item(row, text_field, opening_chars))
        more = len(group) - len(group.head(max_docs))
        parts.append("</ol>" + (f'<p class="meta">… {more} more documents</p>' if more > 0 else "") + "</details>")
    if max_queries is not None and len(qids) > max_queries:
        parts.append(f'<p class="meta">… {len(qids) - max_queries} more queries</p>')
    parts.append("</div>")
    return "\n".join(parts)


def _item(row: dict, text_field: str, opening_chars: int) -> str:
    label = int(row["label"])
    forced = " · label forced" if row.get("forced") else ""
    explanation = html.escape(str(row["explanation"])) or "<i>(no explanation: direct mode)</i>"
    item = (f'<li><span class="label l{label}">{label} {LABEL_NAMES[label]}</span> '
            f'<code>{html.escape(str(row["docno"]))}</code> <span class="meta">score {row["score"]:.3f}{forced}</span>'
            f'<div class="explanation">{explanation}</div>')
    text = row.get(text_field)
    if isinstance(text, str) and text.strip():
        opening = " ".join(text.split())
        opening = opening[:opening_chars] + ("…" if len(opening) > opening_chars else "")
        item += f'<div class="opening">{html.escape(opening)}</div>'
    return item + "</li>"


def write_report(results: pd.DataFrame, path: Union[str, Path], *, title: str = "ReasonRanker explanations",
                 text_field: str = "text") -> Path:
    """Write a static HTML page with every query's ranked documents and explanations."""
    body = explanations_html(results, max_queries=None, max_docs=None, text_field=text_field)
    page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>\n'
            f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
