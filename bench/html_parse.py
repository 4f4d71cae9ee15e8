"""Benchmark: HTML mail → reader text, on a link-heavy newsletter (table layout, inline
styles, thousands of links), at a few sizes up to 1 MB.

Prints one table: the size, the converter we ship (inscriptis, through
``tui_mail.mail.parse.html_to_text_and_links``) and, when it is installed, html2text
(GPL-3.0, the converter we replaced; measured with the options the reader used) on the
same input, uncut. Run: ``.venv/bin/python bench/html_parse.py [--sizes 100,300,1000]``
(sizes in KB).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tui_mail.mail.parse import html_to_text_and_links  # noqa: E402


def newsletter(size_kb: int) -> str:
    """A newsletter like the big senders make: nested layout tables, a style block,
    per-cell inline styles, tracking links on every headline, image and button."""
    head = ("<!DOCTYPE html><html><head><meta charset='utf-8'><style>"
            + "".join(f".c{i}{{color:#{i:06x};padding:{i % 9}px}}" for i in range(200))
            + "</style></head><body><table width='100%' cellpadding='0' cellspacing='0'><tr><td>")
    items = []
    i = 0
    while sum(map(len, items)) + len(head) < size_kb * 1024:
        items.append(
            f"<table class='c{i % 200}' width='600' align='center'><tr>"
            f"<td style='font-family:Arial;font-size:14px;color:#333'><img src='https://img.example.com/{i}.png'"
            f" alt='picture {i}' width='120'></td><td style='padding:8px'>"
            f"<h2><a href='https://click.example.com/t/{i}?utm_source=news&amp;utm_medium=email&amp;id={i * 7919}'>"
            f"Headline number {i}: something happened</a></h2>"
            f"<p>Paragraph {i} with <b>bold</b>, <i>italic</i> and a <a href='https://example.org/story/{i}'>"
            f"read more</a> link. &nbsp;&copy; &eacute;t&eacute;.</p>"
            f"<a class='button' href='https://click.example.com/b/{i}'>Buy now</a></td></tr></table>")
        i += 1
    return head + "".join(items) + "</td></tr></table><p><a href='https://example.org/unsub'>Unsubscribe</a></p></body></html>"


def html2text_convert(html: str) -> str:
    import html2text

    conv = html2text.HTML2Text()
    conv.body_width = 78
    conv.inline_links = html.lower().count("<a ") > 100
    conv.wrap_links = False
    conv.images_to_alt = True
    conv.unicode_snob = True
    return conv.handle(html)


def timed(fn, html: str) -> float:
    t = time.perf_counter()
    fn(html)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,300,1000", help="sizes in KB, comma separated")
    ap.add_argument("--no-html2text", action="store_true", help="skip the old converter")
    args = ap.parse_args()
    try:
        import html2text  # noqa: F401
        have_old = not args.no_html2text
    except ImportError:
        have_old = False
    print(f"| input | links | inscriptis (shipped) | html2text (old) |")
    print(f"|---|---|---|---|")
    for kb in (int(s) for s in args.sizes.split(",")):
        html = newsletter(kb)
        new = min(timed(lambda h: html_to_text_and_links(h, []), html) for _ in range(3))
        _, links = html_to_text_and_links(html, [])
        old = f"{timed(html2text_convert, html):.2f} s" if have_old else "not installed"
        print(f"| {len(html) / 1024:.0f} KB | {html.count('<a ')} ({len(links)} distinct) | {new:.2f} s | {old} |")


if __name__ == "__main__":
    main()
