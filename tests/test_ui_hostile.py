"""Hostile strings from a message or a server go through every screen and toast as plain text.

A real Maildir (LocalStore, real files) holds a message whose sender name, subject, attachment
names and body carry markup (``[/]``, ``[@click=app.quit]``), ESC sequences (clear screen,
OSC 52 clipboard write), C1 controls, a bidi override and a very long name, and folders named
the same way. Pilot drives the real app through the list, preview, reader, attachment list,
folder tree, status bar, toasts (info and error), trace, move picker, composer and prompts; after
each step the app must still run, the text must be on screen literally, and no control
character may be in what would be written to the terminal (checked on the compositor's
segments, on the terminal byte stream and on the exported SVG screenshot).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from rich.console import Console

from test_ui_app import mlist, settle
from tui_mail.store.local import LocalStore
from tui_mail.ui.app import MailApp, UISettings
from tui_mail.ui.demo_app import log_text, queue_table
from tui_mail.ui.safe_text import as_text, is_clean, shown, shown_block
from tui_mail.ui.services import Account

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
SIZE = (140, 40)

CLEAR = "\x1b[2J\x1b[H"
OSC52 = "\x1b]52;c;cHduZWQ=\x07"
MARKUP = ["[/].txt", "[@click=app.quit]x[/]", "[bold red]"]
HOSTILE = MARKUP + [CLEAR, OSC52, "\u202eexe.txt", "\x9b31m", "\x7f", "L" * 5000]
#: control characters that must never reach the terminal as themselves
_BAD = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _qp(text: str) -> str:
    """An RFC 2047 encoded word carrying ``text`` (control bytes included)."""
    data = text.encode("utf-8")
    body = "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"={b:02X}" for b in data)
    return f"=?utf-8?q?{body}?="


def _rfc2231(text: str) -> str:
    return "utf-8''" + "".join(f"%{b:02X}" for b in text.encode("utf-8"))


def hostile_message() -> bytes:
    parts = []
    for i, name in enumerate(["[/].txt", "[@click=app.quit]x[/].html", "a" + CLEAR + "b.pdf",
                              "c" + OSC52 + ".txt", "\u202eexe.txt", "N" * 3000 + ".bin"]):
        parts.append(
            "--BOUNDARY\r\n"
            f"Content-Type: application/octet-stream\r\n"
            f"Content-Disposition: attachment; filename*={_rfc2231(name)}\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n"
            "aGVsbG8=\r\n")
    head = (
        f"From: {_qp('[@click=app.quit]Mallory' + CLEAR)} <mallory@evil.test>\r\n"
        "To: alice@crepes.fr\r\n"
        f"Subject: {_qp('[bold red]Hi[/] ' + OSC52 + ' [/].txt ' + chr(0x202E) + 'gnp.exe')}\r\n"
        "Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n"
        "Message-ID: <hostile@evil.test>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="BOUNDARY"\r\n\r\n'
        "--BOUNDARY\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Body [@click=app.quit]click[/] {CLEAR} {OSC52} \x9b2J end\r\n")
    return (head + "".join(parts) + "--BOUNDARY--\r\n").encode("utf-8")


def make_app(tmp_path) -> tuple[MailApp, LocalStore]:
    root = tmp_path / "mail"
    store = LocalStore(root)
    store.connect()
    for name in ("Trash", "[bold red]", "[@click=bell]q", "esc" + CLEAR + "x", "\u202eevil"):
        store.create_folder(name)
    store.append("INBOX", hostile_message())
    store.close()
    store = LocalStore(root, poll_interval=0.1)
    account = Account("alice", store, "alice@crepes.fr", "Alice")
    return MailApp([account], UISettings(cursor_blink=False), clock=lambda: NOW), store


def check_screen(app: MailApp, svg: bool = True) -> str:
    """Assert the app runs and nothing on screen is a control character; return the text."""
    assert app.is_running and app.return_code is None
    update = app.screen._compositor.render_full_update()
    texts = []
    for strip in update.strips:
        line = "".join(segment.text for segment in strip)
        assert not _BAD.search(line), repr(line)
        texts.append(line)
    # the bytes a terminal would get: only Textual's own SGR / cursor moves may carry ESC
    stream = update.render_segments(app.console)
    stream = re.sub(r"\x1b\[[0-9;:]*[mHJK]|\x1b\]8;[^\x1b\x07]*(?:\x1b\\|\x07)", "", stream)
    assert "\x1b" not in stream and "\x9b" not in stream and "\x07" not in stream
    if svg:
        exported = app.export_screenshot()
        assert not _BAD.search(exported.replace("\n", "").replace("\t", ""))
    return "\n".join(texts)


def test_shown_makes_controls_visible_and_keeps_text():
    assert shown("a\x1bb\x07c\x7fd\x9be\u202ef") == "a␛b␇c␡d\\x9be\\u202ef"
    assert shown("[/].txt") == "[/].txt"
    assert shown("x" * 50, limit=10) == "x" * 9 + "…"
    assert shown_block("a\r\nb\tc\x1b") == "a\nb\tc␛"
    assert shown("bad \udcff byte") == "bad \ufffd byte"
    for hostile in HOSTILE:
        assert is_clean(shown(hostile, None))
        assert as_text(hostile, limit=None).plain == shown(hostile, None)


def test_demo_relay_panel_shows_network_text_literally():
    entry = {"id": "abc", "arrival": 0.0, "sender": "[@click=app.quit]m[/]" + CLEAR,
             "recipients": [{"address": "[bold red]" + OSC52, "status": "deferred",
                             "text": "451 [/] busy \x1b[2J"}]}
    console = Console(width=200, record=True, color_system=None, file=open("/dev/null", "w"))
    console.print(queue_table("crepes.fr", True, {"smtp": ("127.0.0.1", 2525)}, [entry], 10.0))
    console.print(log_text([(0.0, "crepes.fr", "from=<[/]> " + OSC52)]))
    out = console.export_text()
    console.file.close()
    assert "[@click=app.quit]m[/]" in out and "[bold red]" in out and "[/] busy" in out
    assert "from=<[/]>" in out
    assert not _BAD.search(out.replace("\n", ""))


async def test_hostile_strings_through_every_screen(tmp_path):
    app, store = make_app(tmp_path)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None
                     and app.main_screen.preview.uid is not None, timeout=30)
        text = check_screen(app)
        assert "[@click=app.quit]Mallory" in text              # message list + preview sender
        assert "[bold red]Hi[/]" in text                       # subject, literally
        assert "␛[2J" in text and "␛]52;c;cHduZWQ=␇" in text  # ESC shown, not obeyed
        assert "\\u202e" in text
        tree = " ".join(str(n.label) for n in app.main_screen.query_one("FolderTree").root.children[0].children)
        assert "[@click=bell]q" in text and "esc␛[2J␛[Hx" in text      # the tree on screen
        assert "[@click=bell]q" in tree and "[bold red]" in tree

        # status bar with a hostile note, toasts (info, warning, error with a hostile title)
        app.main_screen.status.note = "server says: " + OSC52 + "[/]"
        for severity in ("information", "warning", "error"):
            for hostile in HOSTILE:
                app.notify(hostile, title="[/]" + CLEAR, severity=severity, timeout=30)
                await pilot.pause(0.05)
                text = check_screen(app, svg=hostile is CLEAR)
                assert shown(hostile, 40)[:-1] in text and "[/]␛[2J␛[H" in text
                app.clear_notifications()
        app.notify("markup=True is ignored: [/]", markup=True)
        await pilot.pause(0.05)
        text = check_screen(app)
        assert "server says: ␛]52" in text and "markup=True is ignored: [/]" in text
        app.clear_notifications()

        # the reader with its attachment list
        await pilot.press("enter")
        await settle(pilot, app, lambda: getattr(app.screen, "view", None) is not None, timeout=30)
        text = check_screen(app)
        assert "[/].txt" in text and "[@click=app.quit]x[/].html" in text
        assert "a␛[2J␛[Hb.pdf" in text and "Body [@click=app.quit]click[/]" in text
        await pilot.press("h")           # full headers
        await pilot.pause()
        check_screen(app)
        await pilot.press("v")           # raw source
        await pilot.pause()
        check_screen(app)
        await pilot.press("q")
        await pilot.pause()

        # the move picker, unfiltered and fuzzy-filtered (Textual's highlight parses markup)
        await pilot.press("m")
        await pilot.pause()
        text = check_screen(app)
        assert "[bold red]" in text and "esc␛[2J␛[Hx" in text
        for ch in "[@c":
            await pilot.press(ch)
        await pilot.pause()
        text = check_screen(app)
        assert "[@click=bell]q" in text
        await pilot.press("escape")
        await pilot.pause()

        # the trace with hostile server lines
        app.trace_buffer.add("alice", "S", "* OK " + CLEAR + "[@click=app.quit]hi[/]")
        app.trace_buffer.add("alice", "S", "* BYE " + OSC52)
        await pilot.press("f2")
        await settle(pilot, app, lambda: type(app.screen).__name__ == "TraceScreen", timeout=30)
        await pilot.pause(0.2)
        text = check_screen(app)
        assert "* OK ␛[2J␛[H[@click=app.quit]hi[/]" in text
        await pilot.press("escape")
        await pilot.pause()

        # the composer: reply to the hostile message (subject, To, quoted body)
        app.open_composer_for(app.accounts[0], "reply", app.main_screen.preview.view)
        await settle(pilot, app, lambda: type(app.screen).__name__ == "ComposeScreen", timeout=30)
        text = check_screen(app)
        assert "Re: [bold red]Hi[/]" in text
        await pilot.press("escape")
        await pilot.pause()
        if type(app.screen).__name__ == "ConfirmScreen":
            await pilot.press("y")
            await pilot.pause()

        # the rename prompt with a hostile folder name
        app.main_screen.query_one("FolderTree").select_folder("alice", "esc" + CLEAR + "x")
        await settle(pilot, app, lambda: app.main_screen.folder == "esc" + CLEAR + "x", timeout=30)
        await pilot.press("E")
        await pilot.pause()
        text = check_screen(app)
        assert "esc␛[2J␛[Hx" in text
        await pilot.press("escape")
        await pilot.pause()
        check_screen(app)
    assert app.return_code in (None, 0)


# --- opening an attachment never runs a sender-chosen string (issue 10, item 2) ----------------

def attachment_message(names: list[str]) -> bytes:
    parts = "".join(
        "--B\r\n"
        "Content-Type: text/html\r\n"
        f"Content-Disposition: attachment; filename*={_rfc2231(name)}\r\n\r\n"
        f"<p>attachment {i}</p>\r\n" for i, name in enumerate(names))
    return ("From: m@evil.test\r\nTo: alice@crepes.fr\r\nSubject: open me\r\n"
            "Message-ID: <open@evil.test>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
            "--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n" + parts + "--B--\r\n").encode()


def test_safe_extension_and_opener_refuse_sender_text():
    from tui_mail.ui.screens.reader import opener_command, safe_extension

    assert safe_extension("report.PDF") == ".pdf"
    assert safe_extension("x$(touch pwned).html") == ".html"
    assert safe_extension("x.ht'ml") == "" and safe_extension("x.$(id)") == "" and safe_extension(None) == ""
    import pytest

    from pathlib import Path
    with pytest.raises(ValueError):
        opener_command(Path("/tmp/x$(touch pwned).html"), "text/html")


async def test_opening_attachments_with_quoting_mailcap_runs_nothing(tmp_path, monkeypatch):
    """Names that break out of ``'%s'``/``"%s"`` once interpolated; the viewer gets our copy."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "out"
    out.mkdir()
    cap = tmp_path / "mailcap"
    # the viewer records the path it got, the copy's content and the modes of file and folder
    cap.write_text(f"""text/html; cp '%s' {out}/copy && echo "%s" >> {out}/paths && """
                   f"""stat -c %a '%s' >> {out}/modes && stat -c %a "$(dirname '%s')" >> {out}/modes\n""")
    monkeypatch.setenv("MAILCAPS", str(cap))
    names = ["x$(touch pwned).html", "x'$(touch pwned2)'.html", 'x"$(touch pwned3)".html',
             "x`touch pwned4`.html"]
    root = tmp_path / "mail"
    store = LocalStore(root)
    store.connect()
    store.append("INBOX", attachment_message(names))
    store.close()
    store = LocalStore(root, poll_interval=0.1)
    app = MailApp([Account("alice", store, "alice@crepes.fr", "Alice")], UISettings(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None, timeout=30)
        await pilot.press("enter")
        await settle(pilot, app, lambda: getattr(app.screen, "view", None) is not None, timeout=30)
        reader = app.screen
        for index in range(len(names)):
            reader.query_one("#attachments").highlighted = index
            await pilot.press("O")
            await pilot.pause()
            import asyncio
            for _ in range(1000):                     # the viewer runs detached (≤ 20 s)
                modes = (out / "modes").read_text().split() if (out / "modes").exists() else []
                if len(modes) >= 2 * (index + 1):
                    break
                await asyncio.sleep(0.02)
        assert app.is_running
    paths = (out / "paths").read_text().split()
    assert len(paths) == len(names)
    for path in paths:
        assert path.endswith("/attachment.html") and "$" not in path and "`" not in path
    assert (out / "modes").read_text().split() == ["600", "700"] * len(names)
    assert (out / "copy").read_text().strip() == f"<p>attachment {len(names) - 1}</p>"
    assert not [p for p in work.iterdir()] and not list(tmp_path.rglob("pwned*"))


async def test_the_reader_opens_a_message_of_20000_parts_and_says_what_it_left_out(tmp_path):
    parts = "".join(f"--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
                    f"filename=f{i}.bin\r\n\r\npart {i}\r\n" for i in range(20000))
    raw = ("From: m@evil.test\r\nTo: alice@crepes.fr\r\nSubject: many parts\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
           + parts + "--B--\r\n").encode()
    root = tmp_path / "mail"
    store = LocalStore(root)
    store.connect()
    store.append("INBOX", raw)
    store.close()
    store = LocalStore(root, poll_interval=0.1)
    app = MailApp([Account("alice", store, "alice@crepes.fr", "Alice")], UISettings(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None, timeout=30)
        await pilot.press("enter")
        await settle(pilot, app, lambda: getattr(app.screen, "view", None) is not None, timeout=30)
        view = app.screen.view
        assert len(view.attachments) == 199 and view.parts_left_out == 19801
        text = check_screen(app)
        assert "… 19,801 more parts not shown" in text           # on the first screen, above the list
        assert "hello" in str(app.screen.query_one("#body").render())
        assert app.screen.query_one("#attachments").option_count == 199
