"""Rebuild datasets/python-docs from Debian's python3.11-doc package (PSF licence).

Run once by maintainers (needs `apt-get install python3.11-doc chromium` and
`pip install markdownify`); the result is committed, so nobody else needs it.
HTML pages are copied as they are, reStructuredText sources are kept as .txt,
a few pages are converted to Markdown (markdownify) and a few printed to PDF
(headless Chromium), so the sample exercises every loader.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

DOC_ROOT = Path("/usr/share/doc/python3.11/html")
OUT = Path(__file__).resolve().parents[1] / "python-docs"

# Library pages between these sizes: real reference pages, not index stubs or giants.
HTML_MIN, HTML_MAX, HTML_COUNT = 12_000, 60_000, 165
# Text and Markdown sources above this size (a few giant how-tos) are left out to keep the sample quick to embed.
SOURCE_MAX = 45_000
PDF_PAGES = ["library/bisect.html", "library/heapq.html", "library/secrets.html", "library/shelve.html"]


def copy_html() -> None:
    pages = sorted(
        p
        for p in (DOC_ROOT / "library").glob("*.html")
        if HTML_MIN <= p.stat().st_size <= HTML_MAX and f"library/{p.name}" not in PDF_PAGES
    )
    step = max(1, len(pages) // HTML_COUNT)
    for page in pages[::step][:HTML_COUNT]:
        dest = OUT / "library" / page.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(page, dest)


def copy_rst_sources() -> None:
    for section in ("tutorial", "howto"):
        for src in sorted((DOC_ROOT / "_sources" / section).glob("*.rst.txt")):
            if src.stat().st_size > SOURCE_MAX:
                continue
            dest = OUT / section / src.name.replace(".rst.txt", ".txt")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)


def convert_markdown() -> None:
    from bs4 import BeautifulSoup
    from markdownify import markdownify

    for section in ("faq", "reference", "using"):
        for page in sorted((DOC_ROOT / section).glob("*.html")):
            if page.name == "index.html":
                continue
            soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
            body = soup.select_one("div[role=main]") or soup.body
            for tag in body.select("a.headerlink, script, style, div.topic, nav.contents, div.toctree-wrapper"):
                tag.decompose()
            for link in body.select("a[href^='#']"):
                link.unwrap()  # in-page anchors (Sphinx's table-of-contents links) mean nothing outside the page
            md = markdownify(str(body), heading_style="ATX", code_language="python")
            if len(md) > SOURCE_MAX:
                continue
            dest = OUT / section / page.name.replace(".html", ".md")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(md.strip() + "\n", encoding="utf-8")


def print_pdfs() -> None:
    for rel in PDF_PAGES:
        dest = OUT / "pdf" / Path(rel).name.replace(".html", ".pdf")
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-pdf-header-footer",
                f"--print-to-pdf={dest}",
                (DOC_ROOT / rel).as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main() -> int:
    if not DOC_ROOT.is_dir():
        print(f"{DOC_ROOT} missing: apt-get install python3.11-doc", file=sys.stderr)
        return 1
    shutil.rmtree(OUT, ignore_errors=True)
    copy_html()
    copy_rst_sources()
    convert_markdown()
    print_pdfs()
    n = sum(1 for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {n} documents under {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
