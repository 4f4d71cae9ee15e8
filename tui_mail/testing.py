"""A pytest plugin: ``mail_sink``, a real relay in sink mode for your application's tests.

Load it with ``pytest -p tui_mail.testing`` (or it loads itself through the ``pytest11``
entry point once tui-mail is installed). The fixture starts a relay in sink mode on free
loopback ports inside the test process (one thread with its own event loop), and stops it
after the test::

    def test_signup_sends_welcome(mail_sink):
        myapp.config.SMTP_HOST, myapp.config.SMTP_PORT = mail_sink.smtp
        myapp.signup("bob@example.com")
        msg = mail_sink.wait_for("to:bob@example.com subject:welcome", timeout=5)
        assert "Confirm your address" in msg["Text"]

``wait_for`` long-polls the relay's HTTP API (``/api/v1/wait``), so it returns as soon as the
message is stored, and raises ``AssertionError`` naming the query when nothing matched in
time. The messages are dicts shaped like Mailpit's API (``Subject``, ``From``, ``To``,
``Text``, ``HTML``, ``Attachments``, ``Headers``, ``EnvelopeTo`` …).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

SINK_PASSWORD = "sink"   # loopback only, a throwaway data dir: nothing to protect


class MailSink:
    """A running sink relay (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.user, self.password = "sink", SINK_PASSWORD
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self.addresses: dict[str, tuple[str, int]] = {}

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> MailSink:
        from relay.config import parse_config
        from relay.server import RelayServer

        cfg = parse_config(
            'hostname = "sink.localhost"\n[listen]\nsmtp = "127.0.0.1:0"\nsubmission = "127.0.0.1:0"\n'
            'imap = "127.0.0.1:0"\npop3 = "127.0.0.1:0"\nhttp = "127.0.0.1:0"\n'
            f'[sink]\nenabled = true\npassword = "{SINK_PASSWORD}"\n', None, self.data_dir)
        ready, failure = threading.Event(), []

        async def main() -> None:
            self._stop = asyncio.Event()
            self._server = RelayServer(cfg, grace=1.0)
            try:
                await self._server.start()
            except BaseException as e:
                failure.append(e)
                ready.set()
                return
            self.addresses = dict(self._server.addresses)
            ready.set()
            try:
                await self._stop.wait()
            finally:
                await self._server.stop()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(main())
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="mail-sink", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the mail sink did not start in time")
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._thread = None

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- where to send, where to read ---------------------------------------------------------

    @property
    def smtp(self) -> tuple[str, int]:
        """(host, port) to point the application's SMTP at (no AUTH, any recipient)."""
        return self.addresses["smtp"]

    @property
    def imap(self) -> tuple[str, int]:
        return self.addresses["imap"]

    @property
    def pop3(self) -> tuple[str, int]:
        return self.addresses["pop3"]

    @property
    def api_url(self) -> str:
        host, port = self.addresses["http"]
        return f"http://{host}:{port}/api/v1"

    def _get(self, path: str, params: dict | None = None, *, method: str = "GET", timeout: float = 30.0):
        url = f"{self.api_url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        req = urllib.request.Request(url, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    # ---- what the tests call ------------------------------------------------------------------

    def messages(self, query: str = "", limit: int = 1000) -> list[dict]:
        """Summaries of the caught messages matching ``query`` (the search language), newest first."""
        status, body = self._get("/messages", {"query": query, "limit": limit})
        if status != 200:
            raise ValueError(json.loads(body).get("error", body.decode("utf-8", "replace")))
        return json.loads(body)["messages"]

    def message(self, msg_id: str) -> dict:
        status, body = self._get(f"/message/{msg_id}")
        if status != 200:
            raise KeyError(msg_id)
        return json.loads(body)

    def raw(self, msg_id: str) -> bytes:
        status, body = self._get(f"/message/{msg_id}/raw")
        if status != 200:
            raise KeyError(msg_id)
        return body

    def wait_for(self, query: str = "", timeout: float = 10.0, *, after: str | int = 0) -> dict:
        """The first caught message matching ``query`` (already there, or as soon as it arrives);
        ``AssertionError`` after ``timeout`` seconds."""
        status, body = self._get("/wait", {"query": query, "timeout": timeout, "after": after},
                                 timeout=timeout + 30)
        if status == 200:
            return json.loads(body)
        if status == 408:
            seen = [f"{m['Subject']!r} to {', '.join(m['EnvelopeTo'])}" for m in self.messages()[:10]]
            raise AssertionError(f"no mail matching {query!r} within {timeout:g} s; caught: {seen or 'nothing'}")
        raise ValueError(json.loads(body).get("error", body.decode("utf-8", "replace")))

    def clear(self) -> int:
        status, body = self._get("/messages", method="DELETE")
        return json.loads(body)["deleted"]


@pytest.fixture
def mail_sink():
    """A relay in sink mode for this test (see tui_mail.testing)."""
    with tempfile.TemporaryDirectory(prefix="mail-sink-") as d, MailSink(Path(d) / "relay") as sink:
        yield sink
