"""The atlas in a real headless Chromium (Debian ``chromium``, driven by playwright's Python API).

Pages are opened from ``file://`` exactly as a user would open them: no console errors, no failed
requests, every image decoded, the language search and the table controls working, and a
screenshot whose pixels must show the activation histogram the images really produce (computed
here independently of the atlas).
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from saerad.atlas.plots import BAR, bar_heights

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra (pip install -e .[test])")

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _chromium() -> str:
    for candidate in (os.environ.get("SAERAD_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.path.exists(candidate):
            return candidate
    pytest.skip("no Chromium found (apt-get install chromium, or set SAERAD_CHROMIUM)")


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        # playwright starts Chromium with a fresh temporary --user-data-dir of its own
        instance = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


class Opened:
    """A page plus everything that went wrong while it loaded and ran."""

    def __init__(self, browser, url: str, *, height: int = 900) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": height})
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type in ("error", "warning") and self.problems.append(f"console {m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))
        self.page.goto(url)
        self.page.wait_for_load_state("load")

    def images_loaded(self, selector: str) -> list[bool]:
        self.page.wait_for_function(
            f"Array.from(document.querySelectorAll({selector!r})).every(i => i.complete)", timeout=10_000)
        return self.page.eval_on_selector_all(selector, "els => els.map(i => i.complete && i.naturalWidth > 0)")


def test_index_search_and_table(browser, built_site):
    out, _ = built_site
    opened = Opened(browser, (out / "index.html").as_uri())
    page = opened.page
    assert page.locator("#feature-table tbody tr").count() == 16
    assert page.locator("#search-results").is_hidden()

    page.fill("#q", "effusion")
    cards = page.locator("#search-features li")
    ids = [int(cards.nth(i).get_attribute("data-id")) for i in range(cards.count())]
    # 0 tracks Pleural Effusion and says so; 7 says so; 1 says "No pleural effusion."
    assert ids[:2] == [0, 7] and 1 in ids and 2 not in ids
    assert "Pleural Effusion" in page.inner_text("#search-summary")
    loaded = opened.images_loaded("#search-images img")
    assert loaded and all(loaded)
    assert page.locator("#search-features li").first.locator("a").get_attribute("href") == "features/f00000.html"

    page.fill("#q", "pacemaker")  # no description says it; the labeller's vocabulary maps it to feature 4's condition
    assert page.locator("#search-features li").first.get_attribute("data-id") == "4"
    page.fill("#q", "zebra crossing")
    assert page.locator("#search-features li").count() == 0 and "0 features" in page.inner_text("#search-summary")
    page.fill("#q", "")
    assert page.locator("#search-results").is_hidden()

    def column(name: str) -> list[float]:
        col = page.eval_on_selector_all("#feature-table thead th", f"hs => hs.findIndex(h => h.textContent.trim() === {name!r})")
        return page.eval_on_selector_all(
            "#feature-table tbody tr:not([hidden])", f"rs => rs.map(r => Number(r.cells[{col}].dataset.v || 'NaN'))")

    page.click("#feature-table thead th:text-is('max')")
    ascending = column("max")
    assert ascending == sorted(ascending)
    page.click("#feature-table thead th:text-is('max')")
    assert column("max") == sorted(ascending, reverse=True)
    page.check("#only-usable")
    assert page.locator("#feature-table tbody tr:not([hidden])").count() == 13  # 11, 13, 15 are not usable
    assert page.inner_text("#row-count") == "showing 13 of 16"
    page.fill("#filter", "effusion")
    assert page.locator("#feature-table tbody tr:not([hidden])").count() == 3
    assert opened.problems == []


def test_search_from_a_link(browser, built_site):
    out, _ = built_site
    opened = Opened(browser, (out / "index.html").as_uri() + "#q=cardiomegaly")
    assert opened.page.input_value("#q") == "cardiomegaly"
    assert opened.page.locator("#search-features li").first.get_attribute("data-id") == "2"
    assert opened.problems == []


def test_feature_page(browser, built_site):
    out, _ = built_site
    opened = Opened(browser, (out / "features" / "f00004.html").as_uri(), height=2400)
    page = opened.page
    assert page.inner_text("h1") == "Feature 4"
    assert "tracks Support Devices" in page.inner_text("header")
    assert page.locator("svg.hist rect").count() >= 1
    loaded = opened.images_loaded("main img")
    assert len(loaded) >= 6 and all(loaded)
    page.keyboard.press("ArrowRight")
    page.wait_for_url("**/f00005.html")
    assert page.inner_text("h1") == "Feature 5"
    assert opened.problems == []


def test_screenshot_shows_the_true_histogram(browser, built_site, expected_codes):
    """Pixels of one row's sparkline: each bar's height must be the count of images whose activation
    falls in its bin, computed here from the encoder and SAE, not read from the atlas."""
    out, _ = built_site
    codes = np.stack(list(expected_codes.values()))
    fid = int(np.argmax((codes > 0).sum(0)))
    active = codes[:, fid][codes[:, fid] > 0]
    counts = np.histogram(active, bins=24, range=(0.0, float(active.max())))[0]
    expected = bar_heights(counts.tolist(), 24)

    opened = Opened(browser, (out / "index.html").as_uri())
    spark = opened.page.locator(f'tr[data-id="{fid}"] svg.spark')
    png = spark.screenshot()
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)

    def near(rgb) -> np.ndarray:
        return np.abs(pixels - np.array(rgb)).sum(axis=-1) < 40

    is_bar = near([int(BAR[i : i + 2], 16) for i in (1, 3, 5)])
    drawn = is_bar | near([0xDD] * 3)  # bars and the grey base line
    # The table may place the SVG at a fractional pixel; the crisp bars snap to whole pixels, so
    # find the drawing's left edge instead of assuming column 0.
    x0 = int(np.flatnonzero(drawn.any(axis=0))[0])
    assert drawn[:, x0 : x0 + 96].any(axis=0).all()  # the base line spans the 96 px width
    measured = [int(is_bar[:, x0 + 4 * i : x0 + 4 * i + 3].sum(axis=0).max()) for i in range(24)]
    assert measured == expected, (measured, expected)
    assert not is_bar[:, x0 + 3 : x0 + 96 : 4].any()  # the one-pixel gaps between bars stay empty
    assert opened.problems == []
