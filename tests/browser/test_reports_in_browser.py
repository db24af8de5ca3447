"""The stakeholder reports as a reader's browser shows them: clean, safe, and the numbers a CMO can read."""

from __future__ import annotations

import json
import re

from .browser_support import ADDRESSES, IMG, SCRIPT, keep

#: The stakeholder pages (notebooks 1-4 are the analysts').
STAKEHOLDER = ("05_closed_loop_report.html",)
#: The analysts' pages: held to the same presentation rules (formatted figures, no NaN, no negative credit).
ANALYSTS = ("01_ingest.html", "02_journeys.html", "03_attribution.html", "04_churn_clv.html")
PAGES = (*ANALYSTS, *STAKEHOLDER)
#: Columns where a negative amount is the point: the value of negative shares (notebook 3) and the
#: change a budget move would bring (notebook 5).
NEGATIVE_ALLOWED = ("their value", "change", "change lower", "change upper")
#: A money cell: the symbol and thousands separators, or a withheld / empty figure, or an estimate with
#: its interval.
MONEY_CELL = re.compile(r"−?£\d{1,3}(,\d{3})*( \(−?£\d{1,3}(,\d{3})* to −?£\d{1,3}(,\d{3})*\))?|< 3|—")
TILES = ["Revenue", "Marketing-sourced revenue", "ROI", "Pipeline created", "Leads", "CAC"]
CREDITED = ("revenue", "customers", "pipeline", "leads", "opportunities", "opportunity", "proposal",
            "closed won", "MRR", "new MRR", "deals won")
MONEY = ("revenue", "pipeline", "spend", "CAC", "MRR", "opportunity", "proposal", "closed won", "amount")

TABLES_JS = """() => [...document.querySelectorAll('table')].map(t => ({
    head: [...t.querySelectorAll('thead th')].map(th => th.innerText.trim()),
    rows: [...t.querySelectorAll('tbody tr')].map(tr => [...tr.children].map(td => td.innerText.trim()))}))"""


def _open(page, path):
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    return page


def test_the_sample_batch_runs(batch):
    assert batch["results"]["sample"].status == "ok", batch["results"]["sample"].error


def test_every_page_renders_without_console_errors(batch, page):
    pages = sorted((batch["out"] / "sample").glob("*.html"))
    assert len(pages) >= 5
    for path in pages:
        _open(page, path)
    assert page.problems == []


def test_every_page_shows_no_nan_or_none(batch, page):
    for name in PAGES:
        text = _open(page, batch["out"] / "sample" / name).inner_text("body")
        bad = re.search(r".{0,60}\b(NaN|nan|None|inf)\b.{0,20}", text)
        assert not bad, (name, bad)


def test_the_analysts_pages_show_formatted_money_and_no_negative_credit(batch, page):
    """Notebooks 1-4 through the presentation layer: every column holding money carries the symbol and
    separators in every cell, no credited figure is negative, counts are whole numbers."""
    money = 0
    for name in ANALYSTS:
        tables = _open(page, batch["out"] / "sample" / name).evaluate(TABLES_JS)
        assert tables, name
        for t in tables:
            for j, head in enumerate(t["head"]):
                cells = [r[j] for r in t["rows"] if j < len(r)]
                if any("£" in c for c in cells):
                    money += len(cells)
                    bad = [c for c in cells if not MONEY_CELL.fullmatch(c)]
                    assert not bad, (name, head, bad)
                    if head not in NEGATIVE_ALLOWED:
                        assert not [c for c in cells if c.startswith("−")], (name, head, cells)
                if head in CREDITED:
                    assert not [c for c in cells if c.startswith(("−", "-"))], (name, head, cells)
                # raw pandas output: long decimals, decimals on large figures, or counts like 12.0 (a
                # fixed 3-4 decimals is a chosen precision: log-loss, distances, p-values)
                raw = [c for c in cells if re.fullmatch(r"-?\d+\.\d{5,}|-?\d{4,}\.\d+", c)]
                whole = [c for c in cells if re.fullmatch(r"-?\d+\.0", c)]
                if whole and len(whole) == len([c for c in cells if c not in ("—", "< 3")]):
                    raw += whole                  # a column of whole numbers written as floats
                assert not raw, (name, head, raw[:5])
    assert money > 150


def test_the_analysts_pages_show_pseudonymous_customer_ids_only(batch, page):
    from closedloop_nb.config import SAMPLE_DIR
    from closedloop_nb.validation import load_dataset

    text = _open(page, batch["out"] / "sample" / "04_churn_clv.html").inner_text("body")
    assert len(re.findall(r"\bC-[0-9a-f]{8}\b", text)) >= 10      # at-risk and top-value customers
    raw = load_dataset(SAMPLE_DIR).tables
    ids = set(raw["subscriptions"]["customer_id"]) | set(raw["orders"]["customer_id"])
    assert not [w for w in re.findall(r"\b[A-Z]\d{6,7}\b", text) if w in ids]


def test_no_negative_credited_revenue_or_customers_and_money_has_its_symbol(batch, page):
    tables = _open(page, batch["out"] / "sample" / STAKEHOLDER[0]).evaluate(TABLES_JS)
    assert len(tables) >= 8
    checked = money = 0
    for t in tables:
        for j, head in enumerate(t["head"]):
            cells = [r[j] for r in t["rows"] if j < len(r)]
            if head in CREDITED:
                checked += len(cells)
                assert not [c for c in cells if c.startswith(("−", "-"))], (head, cells)
            if head in MONEY:
                money += len(cells)
                bad = [c for c in cells if not re.fullmatch(r"(−?£\d{1,3}(,\d{3})*|< 3|—)", c)]
                assert not bad, (head, bad)
    assert checked > 50 and money > 50


def test_the_first_screen_has_six_tiles_and_three_sentences(batch, page, tmp_path):
    p = _open(page, batch["out"] / "sample" / STAKEHOLDER[0])
    titles = p.eval_on_selector_all(".cl-tile-title", "els => els.map(e => e.innerText.trim())")
    assert [t.lower() for t in titles] == [t.lower() for t in TILES]
    values = p.eval_on_selector_all(".cl-tile-value", "els => els.map(e => e.innerText.trim())")
    assert all(v and v != "—" for v in values), values
    assert values[0].startswith("£") and values[2].endswith("%")
    sentences = p.eval_on_selector_all(".cl-summary", "els => els.map(e => e.innerText.trim())")
    assert len(sentences) == 3 and all(s.endswith(".") for s in sentences)
    # the tiles are on the first screen of a desktop browser
    box = p.locator(".cl-tiles").bounding_box()
    assert box and box["y"] + box["height"] < 1400
    shot = tmp_path / "report_05_desktop.png"
    p.screenshot(path=str(shot), full_page=False)
    keep(shot)
    full = tmp_path / "report_05_desktop_full.png"
    p.screenshot(path=str(full), full_page=True)
    keep(full)


def test_pages_are_emailable_and_print_on_a4_without_cut_tables(batch, page, tmp_path):
    from closedloop_nb.pdf import print_to_pdf

    for name in PAGES:
        size = (batch["out"] / "sample" / name).stat().st_size
        assert size <= 1_000_000, f"{name} is {size:,} bytes"
    for name in STAKEHOLDER:
        path = batch["out"] / "sample" / name
        p = _open(page, path)
        p.emulate_media(media="print")
        breaks = p.eval_on_selector_all("table", "ts => ts.map(t => getComputedStyle(t).breakInside)")
        assert breaks and set(breaks) == {"avoid"}
        pdf = print_to_pdf(path, tmp_path / name.replace(".html", ".pdf"))
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 20_000
        keep(pdf)


def _files(run_dir):
    """Every text output of a run, and the batch's index beside it."""
    return [f for f in [*sorted(run_dir.rglob("*")), run_dir.parent / "index.html"]
            if f.suffix in (".html", ".ipynb", ".json", ".csv", ".md", ".txt")]


def test_poisoned_data_leaves_no_raw_address_in_any_output_file(batch):
    files = _files(batch["out"] / "poisoned")
    names = {f.name for f in files}
    assert {"manifest.json", "headlines.json", "index.html"} <= names
    assert {n.replace(".html", ".ipynb") for n in PAGES} | set(PAGES) <= names  # every notebook, both forms
    for f in files:
        text = f.read_text("utf-8")
        found = [a for a in ADDRESSES if a in text or a.replace("@", "%40") in text]
        assert not found, (f.name, found[:3])


def test_poisoned_data_leaves_no_live_markup(batch, page):
    run = batch["out"] / "poisoned"
    for f in _files(run):
        text = f.read_text("utf-8")
        if f.suffix == ".html":
            assert IMG not in text and SCRIPT not in text, f.name
            p = _open(page, f)
            assert p.eval_on_selector_all("img[src='x'], [onerror]", "els => els.length") == 0, f.name
            scripts = p.eval_on_selector_all("script", "els => els.map(e => e.textContent)")
            assert not [s for s in scripts if "alert(" in s], f.name
        elif f.suffix == ".ipynb":
            for cell in json.loads(text)["cells"]:
                for out in cell.get("outputs", []):
                    for mime in ("text/html", "text/markdown"):
                        body = "".join(out.get("data", {}).get(mime, ""))
                        assert IMG not in body and SCRIPT not in body, (f.name, mime)
        else:
            assert IMG not in text and SCRIPT not in text, f.name
    assert page.problems == [] or all("dialog" not in p for p in page.problems), page.problems


def test_poisoned_run_ends_or_says_briefly_why(batch, page):
    """Invalid currency rows are rejected where validation knows ISO 4217 codes and the run ends;
    until then the notebook that refuses mixed currencies fails, and the page says so in a sentence."""
    from closedloop_nb.validation import load_dataset

    report = load_dataset(batch["poisoned_data"]).report
    rejects_currency = any(getattr(pr, "column", "") == "currency" for pr in report.problems)
    result = batch["results"]["poisoned"]
    if rejects_currency:
        assert result.status == "ok", result.error
    for entry in result.notebooks:
        html = (batch["out"] / "poisoned" / entry["html"]).read_text("utf-8")
        if entry["status"] != "ok":
            assert "This report is incomplete" in html and "Traceback" not in html, entry["notebook"]
            body = _open(page, batch["out"] / "poisoned" / entry["html"]).inner_text("body")
            assert "Error" not in body and "/tmp/" not in body, entry["notebook"]


def test_per_deal_trail_shows_pseudonymous_ids_only(batch, page):
    from closedloop_nb.config import SAMPLE_DIR
    from closedloop_nb.validation import load_dataset

    text = _open(page, batch["out"] / "sample" / STAKEHOLDER[0]).inner_text("body")
    assert "which touches made each deal" in text.lower()
    assert re.search(r"\bD-[0-9a-f]{8}\b", text) and re.search(r"\bP-[0-9a-f]{8}\b", text)
    raw = load_dataset(SAMPLE_DIR).tables["deals"]
    ids = set(raw["deal_id"]) | set(raw["person_id"])
    assert not [w for w in re.findall(r"\b[A-Z]\d{6,7}\b", text) if w in ids]
