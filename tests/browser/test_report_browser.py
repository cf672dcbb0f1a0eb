"""The compare report in headless Chromium: no JS errors, no network, every figure drawn.

Needs Debian's ``chromium`` (``apt-get install -y chromium``); skipped without it.
"""

from __future__ import annotations

import re

import pytest

from mechit.pipeline.checks import default_prompts_path
from mechit.pipeline.run import Options, compare
from mechit.views.figures import FIGURES

from .chromium import chromium_binary, ink_fraction, inspect_page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(chromium_binary() is None, reason="chromium is not installed"),
]

MIN_INK = 0.01  # share of non-background pixels a drawn figure has at least


@pytest.fixture(scope="module")
def page(tiny_pair_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    prompts = root / "prompts.jsonl"
    lines = default_prompts_path().read_text(encoding="utf-8").splitlines()
    prompts.write_text("\n".join(lines[::7]) + "\n", encoding="utf-8")
    options = Options(max_new_tokens=6, n_words=400, concept_top_k=8, head_top_k=30, n_attention_heads=2)
    report = compare(*tiny_pair_dirs, prompts=prompts, out=root / "run", options=options, progress=False)
    return inspect_page(report, root / "report.png")


def test_no_javascript_errors(page):
    assert page.errors == [], page.errors


def test_nothing_is_fetched(page):
    assert all(url.startswith(("data:", "file:", "blob:")) for url in page.resources), page.resources


def test_every_figure_region_is_drawn(page):
    for fig in FIGURES:
        box = page.boxes[fig]
        assert box["height"] > 100, (fig, box)
        assert ink_fraction(page.screenshot, box) > MIN_INK, fig


def test_attention_views_rendered_by_script(page):
    """The circuitsvis containers are empty divs in the HTML: content means the inlined bundle ran."""
    assert [r["id"] for r in page.rendered] == ["cv-attention-base", "cv-attention-tuned"]
    assert all(r["elements"] > 20 for r in page.rendered), page.rendered


def test_findings_hold_numbers(page):
    text = page.findings_text
    assert len(re.findall(r"p = \d", text)) >= 3
    assert re.search(r"base -?\d\.\d+ \(95 % CI \[-?\d", text)
    assert re.search(r"(Holds|Does not hold|Not shown) on this pair", text)
    assert ink_fraction(page.screenshot, page.boxes["findings"]) > MIN_INK


def test_blank_region_is_detected(page, tmp_path):
    """The ink measure can fail: a region below the page content is blank."""
    below = {"x": 0, "y": page.height - 15, "width": 600, "height": 10}
    assert ink_fraction(page.screenshot, below) < MIN_INK
