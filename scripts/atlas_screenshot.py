"""Screenshot of an atlas index for the docs: the feature table and its plots, never an X-ray.

    python scripts/atlas_screenshot.py SITE docs/atlas-index.png [--sort AUROC] [--ascending]

Opens ``SITE/index.html`` from disk in headless Chromium (Debian ``chromium``; ``SAERAD_CHROMIUM``
overrides the path), sorts the table by a column, and saves the top of the page. Refuses to write the
file when any image element would be in the picture (the README may show tables and plots, not
patients' images) or when the page logged an error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="folder written by `saerad atlas`")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--sort", default="AUROC", help="table column to sort by (its header text)")
    parser.add_argument("--ascending", action="store_true", help="sort ascending (default: descending)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=820)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    index = args.site / "index.html"
    if not index.is_file():
        sys.exit(f"error: {index} not found: write the atlas with `saerad atlas` first")
    chromium = os.environ.get("SAERAD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("error: no Chromium found (apt-get install chromium, or set SAERAD_CHROMIUM)")
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(index.resolve().as_uri())
        page.wait_for_load_state("load")
        if args.sort:
            header = page.locator(f"#feature-table thead th:text-is({args.sort!r})")
            header.click()  # first click sorts ascending
            if not args.ascending:
                header.click()
        visible_images = page.evaluate(
            """([w, h]) => Array.from(document.images).filter(i => {
                 const r = i.getBoundingClientRect();
                 return r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0 && r.top < h && r.left < w;
               }).length""",
            [args.width, args.height],
        )
        if visible_images:
            sys.exit(f"error: {visible_images} image(s) would be in the screenshot; it must show no X-ray")
        if problems:
            sys.exit(f"error: the page reported problems: {problems}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp.png")
        page.screenshot(path=str(tmp))
        tmp.replace(args.out)
        browser.close()
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
