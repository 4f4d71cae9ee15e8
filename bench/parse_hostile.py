"""Benchmark: opening pathological messages in the reader (issue 10, item 5).

For each hostile message: ``parse_message`` (MIME → view), ``render.message_text`` (view →
Rich Text) and the reader's body Static laid out by Textual (headless, 120×40), i.e. what a
user waits for after Enter; plus what the view says it left out. Target: < 1 s per message.
Wall-clock times suffer on a loaded machine; the ``cpu`` column (process CPU time for the
three steps plus starting the headless app) is the steadier figure.

``--reference DIR`` runs the same cases with the package found in DIR (e.g. a checkout of the
previous commit: ``git worktree add /tmp/before HEAD~1``) in a subprocess and prints both
side by side; ``--timeout`` bounds each reference case (the old parser takes tens of seconds).

Run: ``.venv/bin/python bench/parse_hostile.py [--reference DIR] [--cases parts,qp,...]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def many_parts(n: int = 50_000) -> bytes:
    parts = "".join(f"--B\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=f{i}.txt\r\n"
                    f"\r\npart {i}\r\n" for i in range(n))
    return ("From: a@example.org\r\nSubject: many parts\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=B\r\n\r\n" + parts + "--B--\r\n").encode()


def big_qp(mb: int = 40) -> bytes:
    line = "abcdefghij" * 7 + "=3D=\r\n"
    return ("From: a@example.org\r\nSubject: quoted-printable\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            + line * (mb * 1024 * 1024 // len(line))).encode()


def deep(depth: int = 1000) -> bytes:
    head = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth))
    tail = "".join(f"\r\n--b{i}--\r\n" for i in reversed(range(depth)))
    return ("From: a@example.org\r\nSubject: deep\r\nMIME-Version: 1.0\r\n" + head
            + "Content-Type: text/plain\r\n\r\ndeep text" + tail).encode()


def big_attachment(mb: int = 20) -> bytes:
    import base64
    data = base64.encodebytes(os.urandom(mb * 1024 * 1024 * 3 // 4)).decode().replace("\n", "\r\n")
    return ("From: a@example.org\r\nSubject: attachment\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="X"\r\n\r\n--X\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n'
            '--X\r\nContent-Type: application/pdf; name="a.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            + data + "--X--\r\n").encode()


def long_text(chars: int = 1_000_000) -> bytes:
    body = ("All work and no play makes Jack a dull boy. " * 2 + "\r\n") * (chars // 90)
    return ("From: a@example.org\r\nSubject: long\r\nContent-Type: text/plain\r\n\r\n" + body).encode()


CASES = {
    "parts": ("50,000 parts", many_parts),
    "qp": ("40 MB quoted-printable", big_qp),
    "deep": ("1,000 nested multiparts", deep),
    "attachment": ("20 MB base64 attachment", big_attachment),
    "text": ("1,000,000 characters of text", long_text),
}


def measure(case: str) -> dict:
    """Run one case in this process with whatever ``tui_mail`` is importable."""
    from rich.text import Text
    from textual.app import App
    from textual.containers import VerticalScroll
    from textual.widgets import Static

    from tui_mail.mail.parse import parse_message
    from tui_mail.ui.render import message_text

    raw = CASES[case][1]()
    c0 = time.process_time()
    t0 = time.perf_counter()
    view = parse_message(raw)
    t1 = time.perf_counter()
    text = message_text(view)
    t2 = time.perf_counter()

    class Reader(App):
        def compose(self):
            with VerticalScroll():
                yield Static(Text(""), markup=False, id="body")

    async def show() -> float:
        app = Reader()
        async with app.run_test(size=(120, 40)) as pilot:
            start = time.perf_counter()
            app.query_one("#body", Static).update(text)
            await pilot.pause()
            return time.perf_counter() - start

    t_show = asyncio.run(show())
    cpu = time.process_time() - c0    # includes starting the headless app (~0.1 s)
    left = [p for p in view.problems if "not shown" in p or "only its first" in p]
    tail = text.plain[-200:]
    if "not shown" in tail:
        left.append(tail[tail.index("…"):].strip())
    return {"parse": t1 - t0, "render": t2 - t1, "show": t_show, "total": t1 - t0 + t2 - t1 + t_show, "cpu": cpu,
            "size": len(raw), "parts": len(view.attachments), "note": left[0] if left else ""}


def run_elsewhere(directory: str, case: str, timeout: float) -> dict | None:
    env = dict(os.environ, PYTHONPATH=directory)
    try:
        out = subprocess.run([sys.executable, __file__, "--one", case], env=env, cwd=directory,
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--reference", help="a directory holding the previous tui_mail package")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        sys.path.insert(0, os.environ.get("PYTHONPATH", str(ROOT)))
        print(json.dumps(measure(args.one)))
        return
    cases = args.cases.split(",")
    print(f"{'message':<30} {'size':>8} {'ref total':>10} {'ref cpu':>8} {'parse':>7} {'render':>7} {'layout':>7} "
          f"{'total':>7} {'cpu':>6}  what the reader says it left out")
    for case in cases:
        ref = run_elsewhere(args.reference, case, args.timeout) if args.reference else None
        now = run_elsewhere(str(ROOT), case, args.timeout) or {}
        ref_cpu = "-"
        if ref is None and args.reference:
            ref_cell = f">{args.timeout:.0f} s"
        elif ref is None:
            ref_cell = "-"
        elif "error" in ref:
            ref_cell = "error"
        else:
            ref_cell = f"{ref['total']:.2f} s"
            ref_cpu = f"{ref['cpu']:.2f} s" if "cpu" in ref else "-"
        if not now or "error" in now:
            print(f"{CASES[case][0]:<30} {'':>8} {ref_cell:>10} {ref_cpu:>8}  {now.get('error', 'timed out')}")
            continue
        print(f"{CASES[case][0]:<30} {now['size'] / 1e6:>6.1f}MB {ref_cell:>10} {ref_cpu:>8} {now['parse']:>6.2f}s "
              f"{now['render']:>6.2f}s {now['show']:>6.2f}s {now['total']:>6.2f}s {now['cpu']:>5.2f}s  "
              f"{now['note'][:60]}")


if __name__ == "__main__":
    main()
