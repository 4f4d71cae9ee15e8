"""OAuth2 end to end without the internet: a loopback token server (issues, introspects,
refreshes; device-code and authorization-code + PKCE flows), Dovecot 2.3 with the oauth2
passdb checking tokens against it (IMAP, POP3), and Postfix submission whose SASL is that
Dovecot's (SMTP). Proves XOAUTH2 and OAUTHBEARER logins, refresh before expiry and on a
refused token, a clear message naming the fix for a revoked refresh token, `account add
--oauth2` with both flows, and that no token reaches a log or a trace."""

from __future__ import annotations

import asyncio
import email
import io
import logging
import threading
import time
import urllib.request
from email.message import EmailMessage

import pytest
from rich.console import Console

from tests.oauth_peer import OAuthDovecot, SaslPostfix, TokenServer
from tests.peers import dovecot_available
from tests.postfix_peer import postfix_available
from tests.test_commands import memory_keyring  # noqa: F401  (fixture)
from tui_mail import commands, config, oauth2
from tui_mail.oauth2 import OAuth2Error, TokenSource, Tokens, b64, oauthbearer, xoauth2
from tui_mail.send.smtp import SmtpSettings, SmtpSubmitter
from tui_mail.store.imap import ImapStore
from tui_mail.store.pop3 import Pop3Settings, check_pop3

pytestmark = pytest.mark.skipif(not (dovecot_available() and postfix_available()),
                                reason="needs dovecot and postfix")
USER = "bob"


class World:
    def __init__(self, tokens: TokenServer, dovecot: OAuthDovecot, postfix: SaslPostfix):
        self.tokens, self.dovecot, self.postfix = tokens, dovecot, postfix
        self.trace: list[str] = []

    def sink(self, direction: str, line: str) -> None:
        self.trace.append(f"{direction}: {line}")

    def source(self, lifetime_left: float = 3600.0, **kw) -> TokenSource:
        grant = self.tokens.grant()
        tokens = Tokens(grant["access_token"], time.time() + lifetime_left, grant["refresh_token"])
        return TokenSource("work", oauth2=self.tokens.oauth2_table(), tokens=tokens, **kw)

    def imap(self, source) -> list[str]:
        store = ImapStore("work", "127.0.0.1", self.dovecot.imap_port, USER, "", security="none",
                          timeout=10, oauth2=source)
        store.trace = self.sink
        try:
            store.connect()
            return [f.name for f in store.list_folders()]
        finally:
            store.close()

    def pop3(self, source) -> dict:
        return check_pop3(Pop3Settings("127.0.0.1", self.dovecot.pop3_port, "none", USER, oauth2=source),
                          trace=self.sink)

    def smtp(self, source, subject: str = "via oauth2") -> str:
        m = EmailMessage()
        m["From"], m["To"], m["Subject"] = "bob@example.org", "bob@example.org", subject
        m.set_content("hello\n")
        sub = SmtpSubmitter(SmtpSettings("127.0.0.1", self.postfix.port, "none", USER, oauth2=source),
                            trace=self.sink)
        return asyncio.run(sub.send(m)).reply

    def everything_written(self) -> str:
        return "\n".join(self.trace) + self.dovecot.log_text() + self.postfix.log_text()


def start_world(tmp_path_factory, mechanisms: str | None = None):
    tokens = TokenServer({USER: ""}).__enter__()
    dc = OAuthDovecot(tmp_path_factory.mktemp("oauth-dovecot"), tokens)
    if mechanisms:
        original = dc._config
        dc._config = lambda: original().replace("xoauth2 oauthbearer", mechanisms)   # type: ignore[method-assign]
    dc.add_user(USER, "not-used")
    dc.start()
    pf = SaslPostfix(dc.auth_port, users=(USER,))
    try:
        pf.start()
    except (RuntimeError, OSError, KeyError) as e:
        dc.stop()
        tokens.__exit__()
        pytest.skip(f"postfix cannot run here: {e}")
    return World(tokens, dc, pf)


def stop_world(w: World) -> None:
    w.postfix.cleanup()
    w.dovecot.stop()
    w.dovecot.cleanup()
    w.tokens.__exit__()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = start_world(tmp_path_factory)
    yield w
    stop_world(w)


@pytest.fixture(autouse=True)
def fresh_sources():
    oauth2._SOURCES.clear()
    yield
    oauth2._SOURCES.clear()


def assert_no_token_leaked(w: World, caplog=None) -> None:
    text = w.everything_written() + ("\n".join(r.getMessage() for r in caplog.records) if caplog else "")
    for token in w.tokens.issued:
        assert token not in text
        for sasl in (xoauth2(USER, token), oauthbearer(USER, token)):
            assert b64(sasl)[:40] not in text


def test_oauthbearer_on_imap_pop3_and_smtp(world, caplog):
    source = world.source()
    with caplog.at_level(logging.DEBUG):
        assert "INBOX" in world.imap(source)
        assert "SASL" in world.pop3(source)
        assert world.smtp(source, "oauthbearer smtp").startswith("250")
    (got,) = [m for m in world.postfix.wait_for(USER, 1) if b"oauthbearer smtp" in m]
    assert email.message_from_bytes(got)["Subject"] == "oauthbearer smtp"
    log = world.dovecot.log_text()
    assert "user=<bob>, method=OAUTHBEARER" in log
    assert "sasl_method=OAUTHBEARER, sasl_username=bob" in world.postfix.log_text()
    assert any("AUTHENTICATE OAUTHBEARER" in line for line in world.trace)
    assert any(line.startswith("C: AUTH OAUTHBEARER ****") for line in world.trace)
    assert world.tokens.counts["refresh_token"] == 0
    assert_no_token_leaked(world, caplog)


def test_xoauth2_when_that_is_all_the_server_offers(tmp_path_factory):
    w = start_world(tmp_path_factory, mechanisms="xoauth2")
    try:
        source = w.source()
        assert "INBOX" in w.imap(source)
        assert "SASL" in w.pop3(source)
        assert w.smtp(source, "xoauth2 smtp").startswith("250")
        assert "method=XOAUTH2" in w.dovecot.log_text() and "OAUTHBEARER" not in w.dovecot.log_text()
        assert "sasl_method=XOAUTH2" in w.postfix.log_text()
        assert_no_token_leaked(w)
    finally:
        stop_world(w)


def test_refresh_before_expiry(world):
    source = world.source(lifetime_left=10)      # within the refresh margin
    before = world.tokens.counts["refresh_token"]
    assert "INBOX" in world.imap(source)
    assert world.tokens.counts["refresh_token"] == before + 1
    assert world.imap(source) and world.tokens.counts["refresh_token"] == before + 1   # then reused


def test_refresh_when_the_server_refuses_the_token(world):
    source = world.source()
    world.tokens.expire_access_tokens()          # the provider ended it early; we still think it is good
    before = world.tokens.counts["refresh_token"]
    assert "INBOX" in world.imap(source)
    world.tokens.expire_access_tokens()
    assert world.smtp(source, "after refresh").startswith("250")
    world.tokens.expire_access_tokens()
    assert "SASL" in world.pop3(source)
    assert world.tokens.counts["refresh_token"] == before + 3
    assert_no_token_leaked(world)


def test_revoked_refresh_token_names_the_fix(world):
    source = world.source()
    world.tokens.expire_access_tokens()
    world.tokens.revoke_refresh_tokens()
    with pytest.raises(OAuth2Error) as e:
        world.imap(source)
    text = str(e.value)
    assert "no longer valid" in text and "tui-mail account add --name work --oauth2 custom" in text
    with pytest.raises(OAuth2Error, match="account add"):
        world.smtp(source)
    assert not any(t in text for t in world.tokens.issued)


def test_token_command_is_run_for_each_login(world, tmp_path):
    token = world.tokens.grant()["access_token"]
    script = tmp_path / "token.sh"
    script.write_text(f"#!/bin/sh\necho {token}\n")
    script.chmod(0o700)
    source = TokenSource("work", token_command=str(script))
    assert "INBOX" in world.imap(source) and world.smtp(source, "token command").startswith("250")
    bad = TokenSource("work", token_command="false")
    with pytest.raises(OAuth2Error, match="token_command"):
        world.imap(bad)


# --- account add --oauth2: the built-in flows ------------------------------------------------
def run_cli(argv, stdin: str = ""):
    out, err = io.StringIO(), io.StringIO()
    cio = commands.Io(out=Console(file=out, width=300), err=Console(file=err, width=300),
                      stdin=io.StringIO(stdin), interactive=False)
    return commands.main(argv, cio), out.getvalue(), err.getvalue()


def add_argv(world, cfg, flow: str) -> list[str]:
    t = world.tokens
    return ["account", "add", "--config", str(cfg), "--name", "work", "--address", "bob@example.org",
            "--imap", f"127.0.0.1:{world.dovecot.imap_port}", "--security", "none", "--user", USER,
            "--smtp", f"127.0.0.1:{world.postfix.port}", "--smtp-security", "none",
            "--oauth2", "custom", "--client-id", t.client_id, "--token-url", f"{t.url}/token",
            "--auth-url", f"{t.url}/authorize", "--device-url", f"{t.url}/device", "--scope", "mail",
            "--oauth2-flow", flow]


def test_account_add_device_flow_then_send_with_the_stored_refresh_token(world, tmp_path, memory_keyring):  # noqa: F811
    cfg = tmp_path / "config.toml"
    before = dict(world.tokens.counts)
    code, out, err = run_cli(add_argv(world, cfg, "device"))
    assert code == 0, out + err
    assert "enter the code WDJB-MJHT" in out and "✓ IMAP" in out and "✓ SMTP" in out
    assert world.tokens.counts["device_code"] >= before["device_code"] + 2     # pending, then granted
    acct = config.load_config(cfg).account("work")
    assert acct.imap.auth == acct.smtp.auth == "oauth2" and acct.oauth2["provider"] == "custom"
    text = cfg.read_text()
    stored = memory_keyring.items[("tui-mail", "work:oauth2")]
    assert stored.startswith("rt-") and stored not in text and "at-" not in text
    # a later run (fresh process state): access token from the refresh token in the keyring
    oauth2._SOURCES.clear()
    import sys
    sys_stdin = sys.stdin
    sys.stdin = io.StringIO("sent with a refreshed token\n")
    try:
        code, out, err = run_cli(["send", "--config", str(cfg), "--account", "work", "--to", "bob@example.org",
                                  "--subject", "oauth2 from the cli"], stdin="sent with a refreshed token\n")
    finally:
        sys.stdin = sys_stdin
    assert code == 0, out + err
    assert world.tokens.counts["refresh_token"] >= before["refresh_token"] + 1
    assert any(b"oauth2 from the cli" in m for m in world.postfix.wait_for(USER, 1))
    assert_no_token_leaked(world)


def test_account_add_browser_flow_with_pkce(world, tmp_path, memory_keyring, monkeypatch):  # noqa: F811
    followed: list[str] = []

    def browser(url: str) -> None:   # the user's browser: load the page, follow the redirect home
        with urllib.request.urlopen(url, timeout=10) as resp:
            followed.append(resp.geturl())
            resp.read()
    monkeypatch.setattr(oauth2, "open_browser", browser)
    cfg = tmp_path / "config.toml"
    before = world.tokens.counts["authorization_code"]
    code, out, err = run_cli(add_argv(world, cfg, "browser"))
    assert code == 0, out + err
    assert "code_challenge_method=S256" in out and "✓ IMAP" in out
    assert world.tokens.counts["authorization_code"] == before + 1
    assert followed and followed[0].startswith("http://127.0.0.1:") and "code=" in followed[0]
    assert memory_keyring.items[("tui-mail", "work:oauth2")].startswith("rt-")


def test_account_add_without_keyring_names_token_command(world, tmp_path):
    cfg = tmp_path / "config.toml"
    code, out, err = run_cli(add_argv(world, cfg, "device"))
    assert code == 2 and "token_command" in err and not cfg.exists()


def test_pkce_and_endpoint_presets():
    verifier, challenge = oauth2.pkce_pair()
    assert 43 <= len(verifier) <= 128 and "=" not in challenge
    ms = oauth2.Endpoints.from_config({"provider": "microsoft", "client_id": "x", "tenant": "contoso"})
    assert ms.token_url == "https://login.microsoftonline.com/contoso/oauth2/v2.0/token" and "offline_access" in ms.scope
    g = oauth2.Endpoints.from_config({"provider": "google", "client_id": "x", "client_secret": "s"})
    assert g.scope == "https://mail.google.com/" and g.client_secret == "s"
    with pytest.raises(OAuth2Error, match="client_id"):
        oauth2.Endpoints.from_config({"provider": "google"})
    assert oauth2.choose_mechanism({"PLAIN", "XOAUTH2", "OAUTHBEARER"}, "x") == "OAUTHBEARER"
    with pytest.raises(OAuth2Error, match="neither"):
        oauth2.choose_mechanism({"PLAIN"}, "x")
