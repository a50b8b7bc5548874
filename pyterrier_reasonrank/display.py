"""Explanations people can read: result frames as per-query lists, in Jupyter and as HTML reports.

One renderer serves both. Per query, the documents come in rank order, each with one line of facts
(its rank, the first stage's rank and how far it moved, the judged label when qrels are given, the
most probable label with the label distribution as a small bar, the score out of 2, whether the
label was forced), then the explanation and the document's opening. Every value is escaped, and a
missing or out-of-range one is shown as such, never a crash.

The report (:func:`write_report`) adds a header (model, adapter, mode, dataset, depth, date,
version), a legend, an index of the queries, a filter for the pairs that disagree with the qrels,
and collapses each query's documents after the first few, so that vaswani at k=100 (9,300 pairs)
is one page of a few MB that a browser loads in about a second.
"""
from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np
import pandas as pd

from .errors import InputError, UserError
from .loading import model_name
from .prompts import LABEL_NAMES, LABELS
from .qrels import judged_labels
from .student import Student
from .versions import __version__

_NEEDED = {"qid", "docno", "label", "score", "explanation"}
TOP_LABEL = max(LABELS)
EXPANDED = 3
"""Documents shown open per query; the rest of a query's documents are one click away."""

# Contrast of every text colour against its background is at least 4.5:1 (WCAG AA); the bar's at least 3:1.
_STYLE = """<style>
.reasonrank{font:14px/1.45 system-ui,sans-serif;color:#1f1f1f;max-width:90ch;overflow-wrap:anywhere}
.reasonrank h1{font-size:20px;margin:0 0 8px}.reasonrank h2{font-size:15px;margin:20px 0 4px}
.reasonrank ol{list-style:none;margin:2px 0 6px;padding:0}
.reasonrank li{border-top:1px solid #e0e0e0;padding:5px 0 3px}
.reasonrank code{font-size:13px}
.reasonrank .m{color:#555}.reasonrank .nw{white-space:nowrap}
.reasonrank .b{border-radius:3px;padding:0 5px;font-weight:600;white-space:nowrap;color:#fff}
.reasonrank .j{background:#fff;border:1.5px solid;padding:0 4px}
.reasonrank .l0{background:#5c5c5c}.reasonrank .l1{background:#9c4a00}
.reasonrank .l2{background:#1d6b35}.reasonrank .lx{background:#b3261e}
.reasonrank .j.l0{color:#5c5c5c;background:#fff}.reasonrank .j.l1{color:#9c4a00;background:#fff}
.reasonrank .j.l2{color:#1d6b35;background:#fff}.reasonrank .j.lx{color:#b3261e;background:#fff}
.reasonrank .pb{display:inline-flex;width:66px;height:11px;vertical-align:middle;background:#e0e0e0;overflow:hidden}
.reasonrank .pb i{display:block;height:100%}
.reasonrank .p0{background:#5c5c5c}.reasonrank .p1{background:#d97a00}.reasonrank .p2{background:#1d6b35}
.reasonrank .fc{color:#b3261e;font-weight:600}
.reasonrank .e{margin:2px 0;white-space:pre-line}
.reasonrank .o{color:#555;font-size:13px}
.reasonrank details.more>summary,.reasonrank summary{cursor:pointer;color:#0b57d0;margin:2px 0 6px}
.reasonrank .hd{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:1px 14px;margin:0 0 8px}
.reasonrank .hd dt{color:#555}.reasonrank .hd dd{margin:0}
.reasonrank .lg ul{margin:4px 0;padding-left:20px}.reasonrank .lg li{border:0;padding:1px 0}
.reasonrank nav ol{display:flex;flex-wrap:wrap;gap:2px 12px}.reasonrank nav li{border:0;padding:0}
.reasonrank.only-x li.d:not(.x),.reasonrank.only-x section.q:not(.hx),
.reasonrank.only-x details.more>summary{display:none}
</style>"""

_FILTER_SCRIPT = """<script>
document.getElementById("rr-x").addEventListener("change", function (event) {
  var root = document.querySelector(".reasonrank");
  root.classList.toggle("only-x", event.target.checked);
  if (event.target.checked) root.querySelectorAll("details.more").forEach(function (d) { d.open = true; });
});
</script>"""

_LEGEND = """<details class="lg" open><summary>How to read an entry</summary><ul>
<li><b>#3</b>: the rank after re-ranking; <b>first stage #7 ↑4</b>: the document's rank (and score) before
it (<code>first_stage_rank</code>), and how many places it moved.</li>
<li><span class="b j l2">judged 2 relevant</span> (outlined): the qrels' grade as a label 0–2 (the highest
grade is 2, a grade of 0 or less is 0); <i>unjudged</i>: the qrels say nothing about the pair.</li>
<li><span class="b l1">1 partially relevant</span> (filled): the label the model finds most probable, then
its label distribution as a bar: <span class="b l0">p(0)</span> <span class="b l1">p(1)</span>
<span class="b l2">p(2)</span> (hover for the values).</li>
<li><b>score 1.23 / 2</b>: the expected label Σ l·p(l), on the scale 0–2, which orders the documents. It
may differ from the most probable label: p = 0.5, 0.1, 0.4 is label 0 with score 0.90.</li>
<li><span class="fc">forced</span>: the model had not written <code>Relevance:</code> within its token
budget (or left the format), so the marker was appended and the label read there.</li>
</ul></details>"""


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
                      text_field: str = "text", opening_chars: int = 240, qrels: Optional[pd.DataFrame] = None,
                      expanded: int = EXPANDED) -> str:
    """An HTML fragment listing, per query, the ranked documents with their labels, score and explanation.

    Args:
        results: A ReasonRanker result frame (``qid, docno, label, score, explanation``; ``query``,
            ``rank``, ``first_stage_rank``, ``first_stage_score``, ``probabilities``, ``forced``,
            ``samples`` and the text field are shown when present).
        max_queries: Queries shown (``None``: all).
        max_docs: Documents shown per query (``None``: all).
        text_field: The column whose opening is shown under each explanation.
        opening_chars: How much of the document is shown.
        qrels: Judgements (``qid, docno, label``, graded) shown beside the predicted labels.
        expanded: Documents shown open per query; the others are collapsed.

    Raises:
        InputError: A column it needs is missing (named).
    """
    frame, judged = _prepared(results, qrels)
    return "\n".join(['<div class="reasonrank">', _STYLE, *_queries(frame, judged, max_queries, max_docs, text_field,
                                                              opening_chars, expanded, anchors=False), "</div>"])


def write_report(results: pd.DataFrame, path: Union[str, Path], *, qrels: Optional[pd.DataFrame] = None,
                 ranker: Any = None, dataset: Optional[str] = None, k: Optional[int] = None,
                 title: Optional[str] = None, about: Optional[Mapping[str, object]] = None,
                 text_field: str = "text", expanded: int = EXPANDED) -> Path:
    """Write a static HTML page with every query's ranked documents and explanations.

    The page has a header (model, adapter, mode, dataset, depth, date, version), a legend, an index
    of the queries, each query's first ``expanded`` documents open and the rest collapsed, and, with
    ``qrels``, the judged label beside the predicted one and a filter for the pairs that disagree.

    Args:
        results: A ReasonRanker result frame (see :func:`explanations_html`).
        path: The HTML file to write (its folder is made).
        qrels: Judgements (``qid, docno, label``, graded as the collection grades them).
        ranker: The :class:`~pyterrier_reasonrank.ReasonRanker` (or :class:`~pyterrier_reasonrank.Student`)
            that made ``results``: its model, adapter and mode go in the header.
        dataset: The dataset's name, for the header.
        k: The first stage's depth, for the header (default: the most documents of a query).
        title: The page's title (default: from the model and dataset).
        about: More facts for the header, or ones that replace those above (``{"system": ...}``).
        text_field: The column whose opening is shown under each explanation.
        expanded: Documents shown open per query.

    Raises:
        InputError: A column it needs is missing, or ``ranker`` is neither a ranker nor a student.
    """
    frame, judged = _prepared(results, qrels)
    facts = _facts(frame, judged, ranker, dataset, k, about)
    title = title or " · ".join(["ReasonRanker explanations"] + [facts[name] for name in ("model", "dataset")
                                                                 if name in facts])
    parts = [f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
             f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{_esc(title)}</title></head>',
             '<body style="margin:16px"><div class="reasonrank">', _STYLE, f"<header><h1>{_esc(title)}</h1>",
             '<dl class="hd">' + "".join(f"<dt>{_esc(n)}</dt><dd>{_esc(v)}</dd>" for n, v in facts.items()) + "</dl>",
             "</header>", _LEGEND, _index(frame, judged)]
    if judged is not None:
        disagreeing = int(_disagreeing(frame, judged).sum())
        parts.append(f'<p><label><input type="checkbox" id="rr-x"> show only the {disagreeing} judged pairs whose '
                     "most probable label is not the judged one</label></p>")
    parts += _queries(frame, judged, None, None, text_field, 240, expanded, anchors=True)
    parts += ["</div>", _FILTER_SCRIPT if judged is not None else "", "</body></html>\n"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def student_facts(student: Student) -> dict[str, str]:
    """What a report's header says about a student: its model (an adapter's base model), adapter and backend."""
    try:
        model = model_name(student.model, student.adapter)
    except UserError:  # an adapter that cannot be read here: its base model is unknown, not an error
        model = f"the base model of {student.adapter}"
    facts = {"model": model, "adapter": student.adapter or "none"}
    if student.backend != "transformers":
        facts["backend"] = student.backend
    return facts


def model_label(model: str, adapter: Optional[str] = None) -> str:
    """A model's short name for a table: a Hub id as it is, a local directory by its folder's name, plus the adapter's.

    ``model_label("Qwen/Qwen2.5-1.5B-Instruct", "runs/paper-3b/refine")`` is
    ``"Qwen/Qwen2.5-1.5B-Instruct + refine"`` where that adapter is a local directory.
    """
    def short(name: str) -> str:
        return Path(name).name if Path(name).is_dir() else name

    return short(model) + (f" + {short(adapter)}" if adapter else "")


# ---- preparing the frame -------------------------------------------------------------------------------------


def _prepared(results: pd.DataFrame, qrels: Optional[pd.DataFrame]) -> tuple[pd.DataFrame, Optional[dict]]:
    """The frame with string qids, in query order (as first seen) then rank order; the judged labels by pair."""
    missing = sorted(_NEEDED - set(results.columns))
    if missing:
        raise InputError(f"not a ReasonRanker result frame: missing column(s) {missing}")
    frame = pd.DataFrame(results).reset_index(drop=True)
    frame["qid"] = frame["qid"].map(str)
    position = frame.groupby("qid", sort=False).ngroup()
    rank = pd.to_numeric(frame["rank"], errors="coerce") if "rank" in frame.columns else pd.Series(0, frame.index)
    frame = frame.iloc[np.lexsort((rank.fillna(np.inf).to_numpy(), position.to_numpy()))]
    judged = None
    if qrels is not None:
        missing = sorted({"qid", "docno", "label"} - set(qrels.columns))
        if missing:
            raise InputError(f"qrels need the columns qid, docno and label; missing {missing}")
        labels = judged_labels(qrels) if len(qrels) else qrels
        judged = dict(zip(zip(labels["qid"].map(str), labels["docno"].map(str)), labels["label"]))
    return frame, judged


def _disagreeing(frame: pd.DataFrame, judged: dict) -> pd.Series:
    """Whether each pair is judged and its most probable label is not the judged one."""
    truth = [judged.get((qid, str(docno))) for qid, docno in zip(frame["qid"], frame["docno"])]
    return pd.Series([t is not None and _whole(label) != t for t, label in zip(truth, frame["label"])], frame.index)


def _facts(frame: pd.DataFrame, judged: Optional[dict], ranker: Any, dataset: Optional[str], k: Optional[int],
           about: Optional[Mapping[str, object]]) -> dict[str, str]:
    """The report's header: model, adapter, mode, dataset, depth, size, date and version, as text."""
    facts: dict[str, str] = {}
    if ranker is not None:
        student = getattr(ranker, "student", ranker)
        if not isinstance(student, Student):
            raise InputError(f"ranker must be a ReasonRanker or a Student, got {type(ranker).__name__}")
        facts.update(student_facts(student))
        if hasattr(ranker, "mode"):
            facts["mode"] = ranker.mode
    facts.setdefault("mode", _mode_of(frame))
    if dataset is not None:
        facts["dataset"] = dataset
    per_query = frame.groupby("qid", sort=False).size()
    facts["k"] = f"{k} (the first stage's depth)" if k is not None \
        else f"up to {per_query.max() if len(per_query) else 0} documents per query"
    facts["pairs"] = f"{len(frame):,} ({len(per_query):,} queries)"
    if judged is not None:
        known = sum((qid, str(docno)) in judged for qid, docno in zip(frame["qid"], frame["docno"]))
        facts["judged pairs"] = f"{known:,} of {len(frame):,}"
    facts.update({str(name): str(value) for name, value in (about or {}).items()})
    facts["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    facts["version"] = f"pyterrier-reasonrank {__version__}"
    return facts


def _mode_of(frame: pd.DataFrame) -> str:
    """The mode, read from how many explanations each pair drew (``samples``)."""
    if "samples" not in frame.columns or not len(frame):
        return "not given"
    explained = int((pd.to_numeric(frame["samples"], errors="coerce") > 0).sum())
    if explained == 0:
        return "direct (no pair explained)"
    if explained == len(frame):
        return "explain (every pair explained)"
    return f"mixed: {explained:,} of {len(frame):,} pairs explained (adaptive or a cascade)"


# ---- rendering -----------------------------------------------------------------------------------------------


def _index(frame: pd.DataFrame, judged: Optional[dict]) -> str:
    """The queries' ids, each a link to its section (the query and its size on hover), with its disagreements."""
    disagree = _disagreeing(frame, judged) if judged is not None else None
    items = []
    for number, (qid, group) in enumerate(frame.groupby("qid", sort=False)):
        query = _opening(group["query"].iloc[0], 200) if "query" in group.columns else ""
        wrong = int(disagree[group.index].sum()) if disagree is not None else 0
        about = f"{query} · {len(group)} docs" + (f", {wrong} disagree" if disagree is not None else "")
        items.append(f'<li><a href="#q{number}" title="{_esc(about)}">{_esc(qid)}</a>'
                     + (f'<sup class="fc">{wrong}</sup>' if wrong else "") + "</li>")
    note = "Hover over a query id for its query" + ("; in red, how many of its pairs disagree with the qrels"
                                                    if disagree is not None else "")
    return f'<nav><h2>Queries ({len(items)})</h2><p class="m">{note}.</p><ol>{"".join(items)}</ol></nav>'


def _queries(frame: pd.DataFrame, judged: Optional[dict], max_queries: Optional[int], max_docs: Optional[int],
             text_field: str, opening_chars: int, expanded: int, *, anchors: bool) -> list[str]:
    """Each query's section: its heading, its first documents open, the rest collapsed."""
    parts = []
    disagree = _disagreeing(frame, judged) if judged is not None else pd.Series(False, frame.index)
    groups = list(frame.groupby("qid", sort=False))
    for number, (qid, group) in enumerate(groups[:max_queries]):
        query = f" {_esc(group['query'].iloc[0])}" if "query" in group.columns else ""
        shown = group.head(max_docs) if max_docs is not None else group
        items = [_item(row, judged, bool(x), text_field, opening_chars)
                 for row, x in zip(shown.to_dict("records"), disagree[shown.index])]
        anchor = f' id="q{number}"' if anchors else ""
        section = ["<section class=\"q" + (" hx" if disagree[group.index].any() else "") + f'"{anchor}>',
                   f"<h2><code>{_esc(qid)}</code>{query}</h2>", "<ol>" + "".join(items[:expanded]) + "</ol>"]
        if len(items) > expanded:
            section.append(f'<details class="more"><summary>{len(items) - expanded} more documents (#{expanded + 1}–'
                           f'#{len(items)})</summary><ol>' + "".join(items[expanded:]) + "</ol></details>")
        if len(group) > len(shown):
            section.append(f'<p class="m">… {len(group) - len(shown)} more documents not shown (max_docs=None '
                           "shows them)</p>")
        parts.append("".join(section) + "</section>")
    if max_queries is not None and len(groups) > max_queries:
        example = _esc(repr(groups[max_queries][0]))
        parts.append(f'<p class="m">… {len(groups) - max_queries} more queries ({len(groups)} in all) not shown. '
                     '<code>write_report(results, "report.html")</code> writes them all to one page with an index; '
                     "<code>explanations_html(results, max_queries=None)</code> shows them here; "
                     f"<code>results[results.qid == {example}]</code> shows one.</p>")
    return parts


def _item(row: dict, judged: Optional[dict], disagrees: bool, text_field: str, opening_chars: int) -> str:
    """One document: a line of facts, the explanation, the document's opening."""
    facts = [f"<b>#{_ordinal(row.get('rank'))}</b>", _movement(row), f"<code>{_esc(row['docno'])}</code>"]
    if judged is not None:
        truth = judged.get((row["qid"], str(row["docno"])))
        facts.append(_badge(truth, judged=True) if truth is not None else '<i class="m">unjudged</i>')
    facts.append('<span class="nw">most probable ' + _badge(row["label"], judged=False) + " "
                 + _bar(row.get("probabilities")) + "</span>")
    score = _finite(row["score"])
    facts.append(f'<span class="nw">score {score:.2f} / {TOP_LABEL}</span>' if score is not None
                 else '<span class="m">score missing</span>')
    if _whole(row.get("forced")) == 1:
        facts.append('<span class="fc" title="label forced: see the legend">forced</span>')
    item = [f'<li class="d{" x" if disagrees else ""}"><div>{" · ".join(f for f in facts if f)}</div>',
            f'<div class="e">{_explanation(row)}</div>']
    opening = _opening(row.get(text_field), opening_chars)
    if opening:
        item.append(f'<div class="o">{_esc(opening)}</div>')
    return "".join(item) + "</li>"


def _movement(row: dict) -> str:
    """Where the first stage had the document, with its score, and how many places it moved."""
    first = _whole(row.get("first_stage_rank"))
    if first is None:
        return ""
    score = _finite(row.get("first_stage_score"))
    shown = f"first stage #{first + 1}" + (f" ({score:.4g})" if score is not None else "")
    rank = _whole(row.get("rank"))
    if rank is None:
        return f'<span class="m">{shown}</span>'
    moved = first - rank
    arrow = f"↑{moved}" if moved > 0 else f"↓{-moved}" if moved < 0 else "="
    return f'<span class="m">{shown} {arrow}</span>'


def _badge(value: object, *, judged: bool) -> str:
    """A label as a badge (outlined when judged, filled when predicted); a missing or unknown one said so."""
    label = _whole(value)
    prefix = "judged " if judged else ""
    if label in LABEL_NAMES:
        return f'<span class="b{" j" if judged else ""} l{label}">{prefix}{label} {LABEL_NAMES[label]}</span>'
    # Cut: a badge does not wrap, and a label column may hold anything.
    shown = "label missing" if _missing(value) else f"label {_opening(str(value), 30)} (outside 0–{TOP_LABEL})"
    return f'<span class="b{" j" if judged else ""} lx">{prefix}{_esc(shown)}</span>'


def _bar(value: object) -> str:
    """The label distribution as a bar of three widths, with the values on hover; absent or invalid, said so."""
    probabilities = _distribution(value)
    if probabilities is None:
        return '<span class="m">(no distribution)</span>' if _missing(value) \
            else '<span class="m">(distribution invalid)</span>'
    pairs = list(zip(LABELS, probabilities))
    values = " ".join(f"p({label})={p:.2f}" for label, p in pairs)
    widths = "".join(f'<i class="p{label}" style="width:{100 * p:.1f}%"></i>' for label, p in pairs)
    return f'<span class="pb" title="{values}">{widths}</span>'


def _explanation(row: dict) -> str:
    value = row.get("explanation")
    if isinstance(value, str) and value.strip():
        return _esc(value)
    if _whole(row.get("samples")) == 0:
        return '<i class="m">(no explanation: judged in direct mode)</i>'
    return '<i class="m">(empty explanation)</i>' if isinstance(value, str) else '<i class="m">(no explanation)</i>'


def _opening(text: object, chars: int) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return ""
    opening = " ".join(text.split())
    return opening[:chars] + ("…" if len(opening) > chars else "")


# ---- values that may be missing or out of range --------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value))


def _missing(value: object) -> bool:
    return value is None or (np.ndim(value) == 0 and bool(pd.isna(value)))


def _finite(value: object) -> Optional[float]:
    if isinstance(value, (str, bytes)) or np.ndim(value) != 0:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _whole(value: object) -> Optional[int]:
    number = _finite(value)
    return int(number) if number is not None and number == int(number) else None


def _ordinal(rank: object) -> str:
    """A 0-based rank shown from 1; a missing one as ``?``."""
    rank = _whole(rank)
    return str(rank + 1) if rank is not None else "?"


def _distribution(value: object) -> Optional[list[float]]:
    """Three finite probabilities in [0, 1] that sum to 1, else None."""
    if isinstance(value, (str, bytes)) or np.ndim(value) != 1 or len(value) != len(LABELS):
        return None
    probabilities = [_finite(p) for p in value]
    if any(p is None or not 0 <= p <= 1 for p in probabilities) or abs(sum(probabilities) - 1) > 1e-3:
        return None
    return probabilities
