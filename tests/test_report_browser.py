"""The explanation report as a browser renders it: headless Chromium, driven over the DevTools protocol.

Chromium is Debian's package ``chromium``, which scripts/setup.sh installs (as root); without it
these tests are skipped, saying so.
"""
import json

import pytest

from chromium import Browser, require_chromium
from pyterrier_reasonrank import write_report
from report_pages import HOSTILE, LONG_TOKEN, hostile_results, vaswani_scale

WIDTH = 800


@pytest.fixture(scope="module")
def browser():
    browser = Browser(require_chromium(), width=WIDTH)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def hostile_page(browser, tmp_path_factory):
    frame, qrels = hostile_results()
    path = write_report(frame, tmp_path_factory.mktemp("report") / "report.html", qrels=qrels,
                        dataset=HOSTILE[0], title=HOSTILE[1] + LONG_TOKEN)
    browser.load(path)
    return frame, qrels


def test_nothing_overflows_the_viewport_even_with_every_entry_open(browser, hostile_page):
    browser.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    widths = browser.evaluate("""(() => {
        const wide = [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > innerWidth + 0.5)
        return {scroll: document.documentElement.scrollWidth, viewport: innerWidth, wide: wide.length,
                first: wide.slice(0, 3).map(e => e.outerHTML.slice(0, 120)),
                entries: document.querySelectorAll('li.d').length}
    })()""")
    assert widths["viewport"] == WIDTH and widths["scroll"] <= WIDTH and widths["wide"] == 0, widths["first"]
    assert widths["entries"] == len(hostile_page[0])


def test_lines_keep_a_readable_measure(browser, tmp_path):
    wide = Browser(require_chromium(), width=1600)
    try:
        frame, qrels = hostile_results(queries=2)
        wide.load(write_report(frame, tmp_path / "report.html", qrels=qrels))
        measure = wide.evaluate("[document.querySelector('.reasonrank').getBoundingClientRect().width, "
                                "parseFloat(getComputedStyle(document.querySelector('.reasonrank')).fontSize)]")
    finally:
        wide.close()
    width, font = measure
    assert width < 1000 and width / font < 60  # ~90 characters of about half an em each, not the 1,600 px window


def test_hostile_html_stays_text(browser, hostile_page):
    found = browser.evaluate("""({pwned: window.pwned === undefined ? null : window.pwned,
        images: document.querySelectorAll('img, svg').length,
        bold: [...document.querySelectorAll('b')].filter(b => b.textContent === 'bold').length,
        scripts: document.querySelectorAll('script').length, text: document.body.innerText, title: document.title})""")
    assert found["pwned"] is None and found["images"] == 0 and found["scripts"] == 1  # the report's own filter
    assert all(hostile in found["text"] for hostile in HOSTILE)  # in qids, docnos, queries, texts, explanations
    assert found["title"].startswith(HOSTILE[1])
    assert found["bold"] == 0  # the content's <b>bold</b> is text


def test_the_index_links_resolve(browser, hostile_page):
    links = browser.evaluate("""[...document.querySelectorAll('nav a')].map(a => {
        const target = document.getElementById(a.getAttribute('href').slice(1))
        return [a.textContent, target ? target.querySelector('h2 code').textContent : null]
    })""")
    frame = hostile_page[0]
    assert links == [[qid, qid] for qid in dict.fromkeys(frame["qid"])]
    last = browser.evaluate("""(() => { const a = [...document.querySelectorAll('nav a')].pop(); a.click()
        return [location.hash, Math.round(document.getElementById(location.hash.slice(1)).getBoundingClientRect().top)]
    })()""")
    assert last[0] == f"#q{len(links) - 1}" and abs(last[1]) <= 2  # the page scrolled to the query


def test_the_bars_show_the_probabilities(browser, hostile_page):
    bars = browser.evaluate("""[...document.querySelectorAll('li.d')].map(li => {
        const bar = li.querySelector('.pb'), whole = bar.getBoundingClientRect().width
        return [li.querySelector('code').textContent, [...bar.children].map(i => i.getBoundingClientRect().width / whole)]
    })""")
    frame = hostile_page[0]
    expected = dict(zip(frame["docno"], frame["probabilities"]))
    assert len(bars) == len(frame)
    for docno, widths in bars:
        assert widths == pytest.approx(list(expected[docno]), abs=0.02), docno


def test_badges_and_text_have_aa_contrast(browser, hostile_page):
    colours = browser.evaluate("""[...document.querySelectorAll('.b, .m, .o, .fc, summary, a')].map(e => {
        let back = e, style
        while ((style = getComputedStyle(back)).backgroundColor === 'rgba(0, 0, 0, 0)' && back.parentElement)
            back = back.parentElement
        return [e.className || e.tagName, getComputedStyle(e).color, getComputedStyle(back).backgroundColor]
    })""")

    def luminance(css):
        channels = [int(c) / 255 for c in css[css.index("(") + 1:css.index(")")].split(",")[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    ratios = {}
    for name, fore, back in colours:
        if back == "rgba(0, 0, 0, 0)":
            back = "rgb(255, 255, 255)"
        high, low = sorted([luminance(fore), luminance(back)], reverse=True)
        ratios[name] = min(ratios.get(name, 99), (high + 0.05) / (low + 0.05))
    assert {"b l0", "b l1", "b l2", "b j l1", "m", "o", "fc"} <= set(ratios)
    assert min(ratios.values()) >= 4.5, ratios


def test_the_filter_shows_only_the_pairs_that_disagree_with_the_qrels(browser, hostile_page):
    frame, qrels = hostile_page
    judged = {(q, d): 2 if label == 2 else label for q, d, label in zip(qrels.qid, qrels.docno, qrels.label)}
    disagree = sum((q, d) in judged and judged[q, d] != label for q, d, label in zip(frame.qid, frame.docno, frame.label))
    shown = browser.evaluate("""(() => { const box = document.getElementById('rr-x'); box.click()
        const visible = [...document.querySelectorAll('li.d')].filter(li => li.getClientRects().length).length
        box.click()
        return [visible, [...document.querySelectorAll('li.d')].filter(li => li.getClientRects().length).length]
    })()""")
    assert 0 < disagree < len(frame) and shown == [disagree, len(frame)]


def test_a_report_of_vaswanis_size_loads_in_under_five_seconds(browser, tmp_path):
    frame, qrels = vaswani_scale()
    path = write_report(frame, tmp_path / "report.html", qrels=qrels, dataset="irds:vaswani", k=100)
    assert path.stat().st_size < 10e6
    browser.load(path)
    timing = browser.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
    loaded = json.loads(timing)["loadEventStart"]
    assert 0 < loaded < 5000, f"load event {loaded:.0f} ms after navigation started"
    assert browser.evaluate("document.querySelectorAll('li.d').length") == 9300
