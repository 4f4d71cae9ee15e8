"""``tui-mail web`` / ``demo --web``: the token gate over real HTTP, and the TUI in Debian's
headless Chromium (Playwright): see Alice's inbox, send to bob@hamburger.edu by typing, find
it in Bob's Maildir; nothing is requested from anywhere but our server."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from tests.web_browser import Screen, WebDemo, browser_available, launch
from tui_mail.web import TokenGate, is_loopback, parse_listen, run


def get(url: str, headers: dict | None = None):
    req = urllib.request.Request(url, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=20) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_token_gate_is_one_time_and_throttles():
    now = [100.0]
    gate = TokenGate(token="t0k", clock=lambda: now[0])
    assert gate.exchange("1.2.3.4", "wrong") is None and gate.wait_for("1.2.3.4") == 0.5
    assert gate.exchange("1.2.3.4", "wrong2") is None and gate.wait_for("1.2.3.4") == 1.0
    for _ in range(20):
        gate.exchange("1.2.3.4", "x")
    assert gate.wait_for("1.2.3.4") == 30.0         # capped
    sid = gate.exchange("5.6.7.8", "t0k")
    assert sid and gate.valid(sid) and not gate.valid("other") and not gate.valid(None)
    assert gate.exchange("5.6.7.8", "t0k") is None  # spent


def test_listen_rules(capsys):
    assert parse_listen("127.0.0.1:8025") == ("127.0.0.1", 8025) and parse_listen("[::1]:1") == ("::1", 1)
    assert is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    assert run("0.0.0.0:0", None, None, []) == 2
    assert "needs TLS" in capsys.readouterr().err


@pytest.fixture(scope="module")
def web_demo(tmp_path_factory):
    with WebDemo(tmp_path_factory.mktemp("webdemo") / "demo") as demo:
        yield demo


def test_requests_without_the_token_are_refused(web_demo):
    base = web_demo.base
    for path in ("/", "/ws", "/static/js/textual.js", "/download/x"):
        assert get(base + path)[0] == 401, path
    status, headers, _ = get(base + "/?token=not-the-token")
    assert status == 403
    status, _, _ = get(base.replace("127.0.0.1", "localhost") + "/", {"Host": "evil.example:80"})
    assert status == 403


@pytest.mark.skipif(browser_available() is not None, reason=browser_available() or "")
def test_browser_sees_alices_inbox_and_sends_to_bob(web_demo):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            hosts = set()
            page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
            screen = Screen(page)
            page.goto(web_demo.url)
            assert page.url == web_demo.base + "/"                  # the token left the address bar
            cookie = next(c for c in page.context.cookies() if c["name"] == "tui_mail_session")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert web_demo.url.split("token=")[1] not in page.content()
            screen.wait_for("Do you like ketchup?", 40)             # Alice's inbox
            screen.wait_for("5 messages")
            page.click("#terminal")
            page.keyboard.press("Enter")                             # open the newest message …
            screen.wait_for("Next")
            for _ in range(4):                                       # … n(ext) to Bob's ketchup reply
                page.wait_for_timeout(300)
                page.keyboard.press("n")
            screen.wait_for("Pickles too, sliced thin.")
            page.keyboard.press("q")                                 # back to the list
            page.wait_for_timeout(500)
            subject = f"web-{int(time.time())}"
            page.keyboard.press("c")
            screen.wait_for("Subject")
            page.wait_for_timeout(1500)      # the composer focuses To once mounted
            page.keyboard.type("bob@hamburger.edu", delay=30)
            page.wait_for_timeout(300)
            for _ in range(3):                                       # to → cc → bcc → subject
                page.keyboard.press("Tab")
                page.wait_for_timeout(300)
            page.keyboard.type(subject, delay=30)
            page.keyboard.press("Tab")
            page.wait_for_timeout(300)
            page.keyboard.type("Sent from a browser.", delay=30)
            page.wait_for_timeout(300)
            page.keyboard.press("Control+s")
            found = None
            deadline = time.monotonic() + 40
            while found is None and time.monotonic() < deadline:
                for f in web_demo.root.rglob("bob@hamburger.edu/new/*"):
                    if subject.encode() in f.read_bytes():
                        found = f
                page.wait_for_timeout(200)
            assert found is not None, "the message did not reach Bob's Maildir"
            assert b"Sent from a browser." in found.read_bytes()
            assert hosts == {web_demo.base.split("/")[2]}            # no request anywhere else
            assert len(web_demo.app_processes()) == 1                # one TUI process for this tab …
            page.close()
            deadline = time.monotonic() + 20
            while web_demo.app_processes() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert web_demo.app_processes() == []                    # … ended with the tab
        finally:
            browser.close()


def test_tls_listener_sets_a_secure_cookie(tmp_path):
    """With --cert/--key the page is HTTPS and the session cookie is Secure too."""
    import os
    import re
    import signal
    import ssl
    import subprocess
    import sys

    from relay.config import parse_config
    from relay.tls import ensure_self_signed

    cert, key = ensure_self_signed(parse_config("", None, tmp_path / "relay"))
    proc = subprocess.Popen([sys.executable, "-m", "tui_mail", "web", "--listen", "127.0.0.1:0",
                             "--cert", str(cert), "--key", str(key)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        url = re.search(r"(https://\S+)", proc.stdout.readline()).group(1)
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None

        opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=ctx))
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(url.split("?")[0], timeout=20)
        e.value.close()
        assert e.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(url, timeout=20)
        e.value.close()
        assert e.value.code == 303
        cookie = e.value.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Strict" in cookie
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        proc.stdout.close()
        proc.stderr.close()
