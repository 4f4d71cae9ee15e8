"""The client's TLS choices against OUR relay's implicit-TLS listeners (imaps, pop3s,
submissions; off by default) and its STARTTLS ones, over the relay's self-signed certificate:
``cafile`` adds to the system CAs, ``tls_fingerprint`` pins, ``tls_verify = false`` warns on
every connect, and ``tui-mail account test`` offers to pin an untrusted certificate (trust on
first use), never silently."""

from __future__ import annotations

import asyncio
import io
import logging
import ssl
from pathlib import Path

import pytest
from rich.console import Console

from tui_mail import commands, config
from tui_mail.demo import RelayHost, free_port
from tui_mail.errors import MailError
from tui_mail.send.smtp import SmtpSettings, SmtpSubmitter
from tui_mail.store.imap import ImapStore
from tui_mail.store.pop3 import Pop3Settings, check_pop3
from tui_mail.tls import (PinMismatch, client_context, fetch_certificate, fingerprint, is_untrusted_certificate,
                          pretty_fingerprint)

BOB = "bob@example.org"
PW = "s3cret-bob"
KINDS = ("smtp", "submission", "imap", "pop3", "imaps", "pop3s", "submissions")


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    from relay.config import parse_config
    from relay.tls import self_signed_paths
    from relay.users import UserDB

    root = tmp_path_factory.mktemp("tlsrelay")
    ports = {k: free_port() for k in KINDS}
    listen = "\n".join(f'{k} = "127.0.0.1:{p}"' for k, p in ports.items())
    cfg = parse_config(f'hostname = "mail.example.org"\ndomains = ["example.org"]\n[listen]\n{listen}\n',
                       None, root / "data")
    cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    UserDB(cfg.users_file).add(BOB, PW)
    host = RelayHost("example.org", cfg)
    host.start()
    cert = self_signed_paths(cfg)[0]
    host.ports, host.cert = ports, cert
    host.der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    yield host
    host.stop()


def imap_login(relay, port_kind: str, ctx: ssl.SSLContext, security: str = "tls", host="127.0.0.1") -> list:
    store = ImapStore("t", host, relay.ports[port_kind], BOB, PW, security=security, ssl_context=ctx, timeout=10)
    try:
        store.connect()
        return [f.name for f in store.list_folders()]
    finally:
        store.close()


def test_implicit_tls_listeners_are_off_by_default():
    from relay.config import parse_config

    listen = parse_config("").listen
    assert listen.imaps is None and listen.pop3s is None and listen.submissions is None
    assert listen.imap is not None


def test_cafile_adds_to_the_system_list(relay):
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    ours = client_context(cafile=str(relay.cert)).cert_store_stats()["x509_ca"]
    replaced = ssl.create_default_context(cafile=str(relay.cert)).cert_store_stats()["x509_ca"]
    assert ours == system + 1 and replaced == 1     # the stdlib way would have dropped the system CAs


def test_every_implicit_tls_listener_with_cafile(relay):
    ctx = client_context(cafile=str(relay.cert))
    assert "INBOX" in imap_login(relay, "imaps", ctx)
    caps = check_pop3(Pop3Settings("127.0.0.1", relay.ports["pop3s"], "tls", BOB, PW, cafile=str(relay.cert)))
    assert "USER" in caps and "STLS" not in caps          # already TLS: no STLS offered
    smtp = SmtpSubmitter(SmtpSettings("127.0.0.1", relay.ports["submissions"], "tls", BOB, PW, cafile=str(relay.cert)))
    ext = asyncio.run(smtp.check())
    assert "AUTH" in ext and "STARTTLS" not in ext


def test_untrusted_by_default_with_a_clear_error(relay):
    with pytest.raises(MailError) as e:
        imap_login(relay, "imaps", client_context())
    assert is_untrusted_certificate(e.value)
    with pytest.raises(MailError) as e:
        asyncio.run(SmtpSubmitter(SmtpSettings("127.0.0.1", relay.ports["submissions"], "tls", BOB, PW)).check())
    assert is_untrusted_certificate(e.value)


def test_pinned_fingerprint_on_every_protocol_tls_and_starttls(relay):
    pin = fingerprint(relay.der)
    ctx = client_context(tls_fingerprint=pin)
    assert "INBOX" in imap_login(relay, "imaps", ctx, host="localhost")   # any name: the pin decides
    assert "INBOX" in imap_login(relay, "imap", client_context(tls_fingerprint=pin), security="starttls")
    for kind, sec in (("pop3s", "tls"), ("pop3", "starttls")):
        assert "USER" in check_pop3(Pop3Settings("127.0.0.1", relay.ports[kind], sec, BOB, PW, tls_fingerprint=pin))
    for kind, sec in (("submissions", "tls"), ("submission", "starttls")):
        smtp = SmtpSubmitter(SmtpSettings("127.0.0.1", relay.ports[kind], sec, BOB, PW, tls_fingerprint=pin))
        assert "AUTH" in asyncio.run(smtp.check())


def test_wrong_pin_is_refused_on_every_protocol(relay):
    wrong = "sha256:" + "00" * 32
    with pytest.raises(MailError, match="pinned"):
        imap_login(relay, "imaps", client_context(tls_fingerprint=wrong))
    with pytest.raises(MailError, match="pinned|certificate"):
        imap_login(relay, "imap", client_context(tls_fingerprint=wrong), security="starttls")
    with pytest.raises(MailError):
        check_pop3(Pop3Settings("127.0.0.1", relay.ports["pop3s"], "tls", BOB, PW, tls_fingerprint=wrong))
    with pytest.raises(MailError):
        asyncio.run(SmtpSubmitter(SmtpSettings("127.0.0.1", relay.ports["submissions"], "tls", BOB, PW,
                                               tls_fingerprint=wrong)).check())
    # and nothing logged in: the pin check happens right after the handshake, before any command
    assert issubclass(PinMismatch, ssl.SSLCertVerificationError)


def test_tls_verify_false_warns_on_every_connect(relay, caplog):
    trace: list[tuple[str, str]] = []
    settings = SmtpSettings("127.0.0.1", relay.ports["submissions"], "tls", BOB, PW, tls_verify=False)
    smtp = SmtpSubmitter(settings, trace=lambda d, line: trace.append((d, line)))
    with caplog.at_level(logging.WARNING, logger="tui_mail.tls"):
        asyncio.run(smtp.check())
        asyncio.run(smtp.check())
        check_pop3(Pop3Settings("127.0.0.1", relay.ports["pop3s"], "tls", BOB, PW, tls_verify=False))
    warnings = [r.getMessage() for r in caplog.records if r.name == "tui_mail.tls"]
    assert len(warnings) == 3 and all("NOT checked" in w for w in warnings)
    assert sum("NOT checked" in line for _, line in trace) == 2


@pytest.mark.parametrize("kind, port_kind, security", [("imap", "imaps", "tls"), ("imap", "imap", "starttls"),
                                                       ("pop3", "pop3", "starttls"), ("pop3", "pop3s", "tls"),
                                                       ("smtp", "submission", "starttls"),
                                                       ("smtp", "submissions", "tls")])
def test_fetch_certificate_for_trust_on_first_use(relay, kind, port_kind, security):
    assert fetch_certificate(kind, "127.0.0.1", relay.ports[port_kind], security) == relay.der


# --- account test: trust on first use ----------------------------------------------------------
def write_account(relay, path: Path, **imap_extra) -> None:
    extra = "".join(f'{k} = "{v}"\n' for k, v in imap_extra.items())
    path.write_text(f'''# keep me
[[accounts]]
name = "relay"
address = "{BOB}"
password_command = "echo {PW}"
[accounts.imap]
host = "127.0.0.1"
port = {relay.ports["imaps"]}
security = "tls"
{extra}[accounts.smtp]
host = "127.0.0.1"
port = {relay.ports["submissions"]}
security = "tls"
user = "{BOB}"
''')


def run_cli(argv, stdin: str = "", interactive: bool = False):
    out, err = io.StringIO(), io.StringIO()
    cio = commands.Io(out=Console(file=out, width=200), err=Console(file=err, width=200),
                      stdin=io.StringIO(stdin), interactive=interactive)
    code = commands.main(argv, cio)
    return code, out.getvalue(), err.getvalue()


def test_account_test_offers_to_pin_and_never_accepts_silently(relay, tmp_path):
    cfg = tmp_path / "config.toml"
    write_account(relay, cfg)
    before = cfg.read_text()
    code, out, _ = run_cli(["account", "test", "relay", "--config", str(cfg)])          # no terminal
    pretty = pretty_fingerprint(fingerprint(relay.der))
    assert code == 1 and pretty in out and f'tls_fingerprint = "{fingerprint(relay.der)}"' in out
    assert cfg.read_text() == before                                                      # nothing pinned
    code, out, _ = run_cli(["account", "test", "relay", "--config", str(cfg)], stdin="no\nno\n", interactive=True)
    assert code == 1 and cfg.read_text() == before
    code, out, err = run_cli(["account", "test", "relay", "--config", str(cfg)], stdin="yes\nyes\n", interactive=True)
    assert code == 0, out + err
    assert "Pinned the IMAP certificate" in out and "Pinned the SMTP certificate" in out
    saved = config.load_config(cfg).account("relay")
    assert saved.imap.tls_fingerprint == saved.smtp.tls_fingerprint == fingerprint(relay.der)
    assert cfg.read_text().startswith("# keep me")
    code, out, _ = run_cli(["account", "test", "relay", "--config", str(cfg)])            # pinned: no question
    assert code == 0 and out.count("✓") == 2
    code, out, _ = run_cli(["account", "list", "--config", str(cfg)])
    assert "tls (pinned)" in out


def test_account_test_warns_when_verification_is_off(relay, tmp_path):
    cfg = tmp_path / "config.toml"
    write_account(relay, cfg)
    cfg.write_text(cfg.read_text().replace('security = "tls"\n[accounts.smtp]', 'security = "tls"\ntls_verify = false\n[accounts.smtp]'))
    code, out, err = run_cli(["account", "test", "relay", "--config", str(cfg)])
    assert "✓ IMAP" in out and "NOT checked" in err


async def test_tui_shows_tls_warnings_as_toasts_from_any_thread():
    import threading

    from test_ui_app import SIZE, make_app, settle

    app, _, _ = make_app()
    log = logging.getLogger("tui_mail.tls")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        worker = threading.Thread(target=log.warning, args=("TLS certificate of IMAP h:993 NOT checked",))
        worker.start()
        worker.join()
        log.warning("TLS certificate of SMTP h:465 NOT checked")
        await settle(pilot, app, until=lambda: len(app._notifications) >= 2)
        texts = [str(n.message) for n in app._notifications]
        assert any("IMAP h:993 NOT checked" in t for t in texts) and any("SMTP h:465" in t for t in texts)
    assert log.propagate and not log.handlers     # put back when the app ends
