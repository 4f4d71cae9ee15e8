"""The script-facing commands: ``tui-mail account add|list|test`` and ``tui-mail send``.

    tui-mail account add [--name N --address A --imap HOST | --pop3 HOST ... --smtp HOST ...]
    tui-mail account list
    tui-mail account test NAME
    tui-mail send --account NAME --to ADDR [--cc … --bcc … --subject … --attach FILE …] < body

Output goes through rich; every failure is one clear line on stderr, never a traceback.
Exit codes: 0 done; 1 the server or network said no (nothing lost: a message that could not be
sent waits in the account's Outbox); 2 the command line or the configuration is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import ssl
import sys
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from tui_mail.errors import MailError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad arguments or configuration: exit 2."""


@dataclass
class Io:
    """Where the commands read and write (tests pass their own)."""

    out: Console
    err: Console
    stdin: object = None
    interactive: bool = False


# --- parsing ---------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump on stderr
        raise UsageError(f"{self.prog}: {message}")


def _server_arg(text: str) -> tuple[str, int | None]:
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and host and not host.endswith(":"):
        return host.strip("[]"), int(port)
    return text.strip("[]"), None


def add_send_parser(sub, common: argparse.ArgumentParser) -> None:
    send = sub.add_parser(
        "send", parents=[common], help="send a message from a script; the body is read from stdin",
        description="Compose a message and submit it through the account's SMTP server. The body "
                    "is read from standard input (UTF-8) until end of file, e.g. "
                    "`echo hi | tui-mail send --account work --to bob@example.org --subject Hi`. "
                    "Exit 0 sent, 1 not sent (it waits in the account's Outbox), 2 usage/config error.")
    send.add_argument("--account", required=True, metavar="NAME", help="the account to send from")
    send.add_argument("--to", action="append", default=[], metavar="ADDR", help="a recipient (repeatable)")
    send.add_argument("--cc", action="append", default=[], metavar="ADDR", help="a Cc recipient (repeatable)")
    send.add_argument("--bcc", action="append", default=[], metavar="ADDR", help="a Bcc recipient (repeatable)")
    send.add_argument("--subject", default="", metavar="TEXT")
    send.add_argument("--attach", action="append", default=[], metavar="FILE", help="attach a file (repeatable)")
    send.add_argument("--from", dest="from_", metavar="ADDR", help="override the account's From")
    send.add_argument("--queue-only", action="store_true",
                      help="only put the message in the Outbox; do not contact the server")


def add_account_parser(sub, common: argparse.ArgumentParser) -> None:
    acc = sub.add_parser("account", parents=[common], help="add, list and test accounts",
                         description="Manage the accounts in config.toml.")
    acc_sub = acc.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=type(acc))
    acc_sub.add_parser("list", parents=[common], help="list configured accounts")
    test = acc_sub.add_parser("test", parents=[common], help="log in to the account's servers and report")
    test.add_argument("name", metavar="NAME")
    add = acc_sub.add_parser("add", parents=[common], help="add an account (prompts for what is missing)")
    add.add_argument("--name", metavar="NAME")
    add.add_argument("--address", metavar="ADDR")
    add.add_argument("--display-name", default=None, metavar="TEXT")
    kind = add.add_mutually_exclusive_group()
    kind.add_argument("--imap", metavar="HOST[:PORT]")
    kind.add_argument("--pop3", metavar="HOST[:PORT]")
    add.add_argument("--security", choices=("tls", "starttls", "none"), default=None,
                     help="for the IMAP/POP3 server (default tls)")
    add.add_argument("--user", metavar="LOGIN", help="login for the IMAP/POP3 server (default: the address)")
    add.add_argument("--smtp", metavar="HOST[:PORT]")
    add.add_argument("--smtp-security", choices=("tls", "starttls", "none"), default=None,
                     help="default starttls")
    add.add_argument("--smtp-user", metavar="LOGIN", help="login for SMTP (default: the IMAP/POP3 login)")
    add.add_argument("--pop3-mode", choices=("keep", "delete", "leave"), default="keep")
    add.add_argument("--leave-days", type=int, default=14, metavar="DAYS")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of stdin")
    add.add_argument("--password-command", metavar="COMMAND", help="get the password by running this "
                     "command instead of storing it in the keyring")
    add.add_argument("--cafile", metavar="FILE", help="a CA certificate to trust for these servers, "
                     "in addition to the system's")
    add.add_argument("--no-test", action="store_true", help="save without testing the connection")
    oauth = add.add_argument_group("OAuth2 (instead of a password)")
    oauth.add_argument("--oauth2", choices=("google", "microsoft", "custom"),
                       help="sign in with OAuth2 now (device code or browser) and keep the refresh token "
                            "in the keyring")
    oauth.add_argument("--client-id", metavar="ID", help="your OAuth2 app's client id (required with --oauth2)")
    oauth.add_argument("--client-secret", metavar="SECRET", help="its client secret, when the provider gave one")
    oauth.add_argument("--oauth2-flow", choices=("device", "browser"),
                       help="device: enter a code on another device; browser: sign in through a browser "
                            "on this machine (default: microsoft device, others browser)")
    oauth.add_argument("--tenant", metavar="TENANT", help="Microsoft tenant (default common)")
    oauth.add_argument("--auth-url", metavar="URL", help="custom provider: authorization endpoint")
    oauth.add_argument("--token-url", metavar="URL", help="custom provider: token endpoint")
    oauth.add_argument("--device-url", metavar="URL", help="custom provider: device authorization endpoint")
    oauth.add_argument("--scope", metavar="SCOPES", help="override the scopes asked for")
    oauth.add_argument("--token-command", metavar="COMMAND",
                       help="get access tokens by running this command (oama, mutt_oauth2.py…) instead")


def build_parser() -> argparse.ArgumentParser:
    """The whole ``tui-mail`` command line (tui_mail.cli), erroring with UsageError."""
    from tui_mail.cli import build_parser as full

    return full(_Parser)


# --- entry -----------------------------------------------------------------------------------
def main(argv: list[str], io: Io | None = None) -> int:
    if io is None:
        io = Io(out=Console(), err=Console(stderr=True, soft_wrap=True), stdin=sys.stdin,
                interactive=sys.stdin.isatty())
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        io.err.print(f"[bold red]error:[/] {e}", highlight=False)
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return int(e.code or 0)
    args._interactive = io.interactive
    args.config = getattr(args, "config", None)
    tls_log = _warnings_to(io)
    try:
        if args.command == "send":
            return cmd_send(args, io)
        return {"list": cmd_account_list, "test": cmd_account_test,
                "add": cmd_account_add}[args.action](args, io)
    except UsageError as e:
        io.err.print(f"[bold red]error:[/] {_escape(str(e))}", highlight=False, markup=True)
        return EXIT_USAGE
    except MailError as e:
        io.err.print(f"[bold red]error:[/] {_escape(str(e))}", highlight=False)
        return EXIT_USAGE if _is_config_error(e) else EXIT_FAIL
    except KeyboardInterrupt:
        io.err.print("interrupted")
        return EXIT_FAIL
    finally:
        tls_log()


def _warnings_to(io: Io):
    """Show TLS warnings (tls_verify = false, on every connect) on the command's stderr;
    returns the function that undoes it."""
    import logging

    class ToStderr(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            io.err.print(f"[yellow]warning:[/] {_escape(record.getMessage())}", highlight=False)

    logger = logging.getLogger("tui_mail.tls")
    handler, saved = ToStderr(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False

    def undo() -> None:
        logger.removeHandler(handler)
        logger.propagate = saved
    return undo


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _is_config_error(e: MailError) -> bool:
    from tui_mail.errors import ConfigError, SecretError

    return isinstance(e, (ConfigError, SecretError))


# --- connection checks (account add / account test) -----------------------------------------
def check_imap(host: str, port: int, security: str, user: str, password: str | None,
               cafile: str | None = None, server=None, oauth2=None) -> list[str]:
    """Log in to an IMAP server (with the IMAP store's own error conversion) and out again;
    the capabilities it offers after login. ``server`` (config.Server) brings the TLS choices."""
    from tui_mail.store.imap import ImapStore
    from tui_mail.tls import client_context, for_server

    ctx = None
    if security != "none":
        ctx = for_server(server, "imap", host, port) if server is not None else client_context(cafile=cafile)
    store = ImapStore("account-test", host, port, user, password or "", security=security,
                      ssl_context=ctx, timeout=20, oauth2=oauth2)
    try:
        store.connect()
        caps = store.capabilities()
    finally:
        store.close()
    return sorted(c.decode() if isinstance(c, bytes) else str(c) for c in caps)


def check_smtp(settings) -> list[str]:
    from tui_mail.send.smtp import SmtpSubmitter

    caps = asyncio.run(SmtpSubmitter(settings).check())
    return sorted(f"{k} {v}".strip() for k, v in caps.items())


# --- send ------------------------------------------------------------------------------------
def cmd_send(args, io: Io) -> int:
    from tui_mail.accounts import open_outbox, sent_copy_to, smtp_settings
    from tui_mail.mail.compose import ComposeError, Draft, build_message
    from tui_mail.send.smtp import SmtpSubmitter

    if not (args.to or args.cc or args.bcc):
        raise UsageError("send: give at least one --to, --cc or --bcc")
    account = find_account(args, args.account)
    if getattr(account, "smtp", None) is None:
        raise UsageError(f"account {account.name!r} has no [smtp] server configured")
    body = (io.stdin.read() if io.stdin is not None else "")
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    draft = Draft(from_=args.from_ or _identity(account), to=", ".join(args.to),
                  cc=", ".join(args.cc), bcc=", ".join(args.bcc), subject=args.subject,
                  body=body, attachments=list(args.attach), identity=account.name)
    try:
        composed = build_message(draft)
    except ComposeError as e:
        raise UsageError(f"send: {e.field}: {e}") from None
    smtp_pw = password_for(args, account, "smtp") if getattr(account.smtp, "user", None) else None
    submitter = SmtpSubmitter(smtp_settings(account, smtp_pw))
    store = sent_store(args, account)
    outbox = open_outbox(account, submitter, sent_copy_to(store) if store is not None else None)
    try:
        key = outbox.enqueue(composed)
        if args.queue_only:
            io.out.print(f"Queued in the Outbox of {account.name} ({len(composed.recipients)} recipients).")
            return EXIT_OK
        outcomes = {o.key: o for o in asyncio.run(outbox.process())}
    finally:
        outbox.close()
        if store is not None:
            store.close()
    o = outcomes.get(key)
    if o is None:
        io.err.print("Queued in the Outbox; another tui-mail is sending right now and will send it.")
        return EXIT_FAIL
    if o.state in ("filed", "sent"):
        n = len(composed.recipients)
        io.out.print(f"Sent to {n} recipient{'s' if n != 1 else ''}: {_escape(o.detail)}", highlight=False)
        if o.state == "sent":
            io.err.print(f"[yellow]warning:[/] the copy to Sent failed and will be retried: {_escape(o.detail)}")
        return EXIT_OK
    if o.state == "failed":
        io.err.print(f"[bold red]error:[/] not sent: {_escape(o.detail)} (the message stays in the Outbox, "
                     "marked failed)", highlight=False)
        return EXIT_FAIL
    io.err.print(f"[yellow]not sent yet:[/] {_escape(o.detail)}", highlight=False)
    return EXIT_FAIL


def _identity(account) -> str:
    name = getattr(account, "display_name", "") or ""
    if not name:
        return account.address
    from email.headerregistry import Address

    local, _, domain = account.address.partition("@")
    try:
        return str(Address(name, local, domain))
    except (ValueError, IndexError):
        return account.address


# --- account list / test ---------------------------------------------------------------------
def _describe(kind: str, server) -> str:
    if server is None:
        return "-"
    from tui_mail.accounts import _server_port

    user = getattr(server, "user", None)
    notes = [n for n, on in (("oauth2", getattr(server, "auth", "password") == "oauth2"),
                             ("pinned", bool(getattr(server, "tls_fingerprint", None))),
                             ("UNVERIFIED", getattr(server, "tls_verify", True) is False)) if on]
    return (f"{kind.upper()} {server.host}:{_server_port(kind, server)} {server.security}"
            + (f" ({', '.join(notes)})" if notes else "") + (f" as {user}" if user else ""))


def cmd_account_list(args, io: Io) -> int:
    accounts = load_accounts(args)
    if not accounts:
        io.out.print("No accounts yet. Add one with: tui-mail account add")
        return EXIT_OK
    table = Table("name", "address", "reading", "sending", box=None, pad_edge=False)
    for a in accounts:
        reading = _describe("imap", getattr(a, "imap", None)) if getattr(a, "imap", None) \
            else _describe("pop3", getattr(a, "pop3", None))
        table.add_row(a.name, a.address, reading, _describe("smtp", getattr(a, "smtp", None)))
    io.out.print(table)
    return EXIT_OK


def check_servers(args, account, io: Io, passwords: dict[str, str | None] | None = None,
                  pins: dict[str, str] | None = None) -> bool:
    """Log in to each of the account's servers; print capabilities or the failure. True if all
    ok. ``passwords`` (kind → password) are used instead of the keyring (account add).

    A server whose certificate is not trusted: its certificate is shown and, in a terminal,
    the user is offered to pin it (trust on first use); what they accept goes into ``pins``
    (kind → "sha256:…") and that server is checked again with the pin. Never accepted
    silently: without a terminal the fix is printed instead."""
    first = _check_servers(args, account, io, passwords)
    if all(ok for ok, _ in first.values()):
        return True
    retry = {}
    for kind, (ok, error) in first.items():
        if ok or error is None:
            continue
        from tui_mail.tls import is_untrusted_certificate

        if not is_untrusted_certificate(error):
            continue
        fp = offer_pin(io, kind, account, getattr(account, kind))
        if fp is not None:
            retry[kind] = fp
    if not retry:
        return False
    import dataclasses

    pinned = dataclasses.replace(account, **{k: dataclasses.replace(getattr(account, k), tls_fingerprint=fp)
                                             for k, fp in retry.items()})
    again = _check_servers(args, pinned, io, passwords, only=set(retry))
    if pins is not None:
        pins.update({k: fp for k, fp in retry.items() if again.get(k, (False, None))[0]})
    return all((again.get(k) or first[k])[0] for k in first)


def offer_pin(io: Io, kind: str, account, server) -> str | None:
    """Show the certificate of an untrusted server; return its fingerprint if the user pins it."""
    from tui_mail.accounts import _server_port
    from tui_mail.tls import certificate_info, fetch_certificate

    port = _server_port(kind, server)
    try:
        info = certificate_info(fetch_certificate(kind, server.host, port, server.security))
    except (OSError, ValueError) as e:
        io.err.print(f"cannot read the certificate of {_escape(server.host)}:{port}: {_escape(str(e))}",
                     highlight=False)
        return None
    io.out.print(f"The {kind.upper()} server {_escape(server.host)}:{port} presents a certificate this "
                 f"system does not trust:\n{_escape(info.describe())}", highlight=False, soft_wrap=True)
    line = f'tls_fingerprint = "{info.fingerprint}"'
    if not io.interactive:
        io.out.print(_escape(f"To trust exactly this certificate, add  {line}  under [accounts.{kind}] "
                             "in config.toml (or run the command in a terminal to be asked)."),
                     highlight=False, soft_wrap=True)
        return None
    answer = _ask(io, "Compare the fingerprint with the one your server admin gives you. Pin this "
                      f"certificate for {server.host} (yes/no)", default="no")
    if answer.lower() not in ("y", "yes"):
        return None
    return info.fingerprint


def _check_servers(args, account, io: Io, passwords: dict[str, str | None] | None,
                   only: set[str] | None = None) -> dict[str, tuple[bool, Exception | None]]:
    """kind → (ok, error) for each server checked."""
    from tui_mail.accounts import _server_port, oauth2_for, pop3_settings, smtp_settings
    from tui_mail.store.pop3 import check_pop3

    def password(kind: str) -> str | None:
        if passwords is not None:
            return passwords.get(kind)
        return password_for(args, account, kind)

    ok = True
    checks = []
    if getattr(account, "imap", None) is not None:
        s = account.imap

        def imap():
            return check_imap(s.host, _server_port("imap", s), s.security, s.user or account.address,
                              password("imap"), getattr(s, "cafile", None), server=s,
                              oauth2=oauth2_for(account, s))
        checks.append(("IMAP", imap))
    if getattr(account, "pop3", None) is not None:
        def pop3():
            caps = check_pop3(pop3_settings(account, password("pop3")))
            return sorted(" ".join([k, *v]) for k, v in caps.items())
        checks.append(("POP3", pop3))
    if getattr(account, "smtp", None) is not None:
        def smtp():
            pw = password("smtp") if getattr(account.smtp, "user", None) else None
            return check_smtp(smtp_settings(account, pw))
        checks.append(("SMTP", smtp))
    results: dict[str, tuple[bool, Exception | None]] = {}
    for label, run in checks:
        if only is not None and label.lower() not in only:
            continue
        try:
            caps = run()
        except MailError as e:
            ok = False
            results[label.lower()] = (False, e)
            io.out.print(f"[red]✗[/] {label}: {_escape(str(e))}", highlight=False)
            continue
        results[label.lower()] = (True, None)
        io.out.print(f"[green]✓[/] {label}: logged in; offers {_escape(', '.join(caps) or 'nothing special')}",
                     highlight=False)
    return results


def cmd_account_test(args, io: Io) -> int:
    account = find_account(args, args.name)
    pins: dict[str, str] = {}
    ok = check_servers(args, account, io, pins=pins)
    if pins:
        save_pins(args, account, pins, io)
    return EXIT_OK if ok else EXIT_FAIL


def save_pins(args, account, pins: dict[str, str], io: Io):
    """Write accepted certificate pins into config.toml (the rest of the file untouched)."""
    import dataclasses

    from tui_mail import config

    account = dataclasses.replace(account, **{k: dataclasses.replace(getattr(account, k), tls_fingerprint=fp)
                                              for k, fp in pins.items()})
    path = config.save_account(account, args.config)
    for kind, fp in pins.items():
        io.out.print(f"Pinned the {kind.upper()} certificate ({fp[:19]}…) in {_escape(str(path))}", highlight=False)
    return account


# --- config and secrets glue -----------------------------------------------------------------
def load_accounts(args) -> tuple:
    from tui_mail.config import load_config

    return load_config(args.config).accounts


def find_account(args, name: str):
    from tui_mail.config import load_config

    return load_config(args.config).account(name)


def password_for(args, account, kind: str) -> str | None:
    from tui_mail import secrets

    prompt = getpass.getpass if getattr(args, "_interactive", False) else None
    return secrets.password_for(account, kind, prompt=prompt)


def sent_store(args, account):
    """Where `send` files its Sent copy: the POP3 account's local store or the IMAP store."""
    from tui_mail.accounts import imap_store, local_store

    if getattr(account, "pop3", None) is not None:
        return local_store(account, lambda acct, kind: None)  # local: no login needed
    if getattr(account, "imap", None) is not None:
        return imap_store(account, password_for(args, account, "imap"))
    return None


# --- account add -----------------------------------------------------------------------------
def _ask(io: Io, question: str, default: str | None = None, password: bool = False) -> str:
    from rich.prompt import Prompt

    stream = None if io.stdin is sys.stdin else io.stdin
    if password and stream is not None:  # not a terminal: nothing to hide the echo of
        io.out.print(f"{question}: ", end="")
        return stream.readline().strip()
    answer = Prompt.ask(question, console=io.out, default=default, password=password, stream=stream)
    return (answer or "").strip()


def _need(io: Io, value, flag: str, question: str, default: str | None = None) -> str:
    if value:
        return value
    if io.interactive:
        answer = _ask(io, question, default)
        if answer:
            return answer
    if default is not None and not io.interactive:
        return default
    raise UsageError(f"account add: {flag} is required (or run it in a terminal to be asked)")


def cmd_account_add(args, io: Io) -> int:
    from tui_mail import config, secrets

    name = _need(io, args.name, "--name", "Account name (e.g. work)")
    address = _need(io, args.address, "--address", "E-mail address")
    if "@" not in address:
        raise UsageError(f"account add: {address!r} is not an e-mail address")
    display = args.display_name if args.display_name is not None else (
        _ask(io, "Display name", default="") if io.interactive else "")
    kind = "imap" if args.imap else "pop3" if args.pop3 else None
    if kind is None:
        kind = _need(io, None, "--imap or --pop3", "Read mail with imap or pop3", default="imap").lower()
        if kind not in ("imap", "pop3"):
            raise UsageError("account add: choose imap or pop3")
    incoming = args.imap or args.pop3 or _need(io, None, f"--{kind}", f"{kind.upper()} server (host[:port])")
    host, port = _server_arg(incoming)
    security = args.security or (_ask(io, "Security (tls/starttls/none)", default="tls")
                                 if io.interactive else "tls")
    smtp = args.smtp or _need(io, None, "--smtp", "SMTP server for sending (host[:port])")
    shost, sport = _server_arg(smtp)
    ssec = args.smtp_security or (_ask(io, "SMTP security (tls/starttls/none)", default="starttls")
                                  if io.interactive else "starttls")
    for sec in (security, ssec):
        if sec not in config.SECURITY:
            raise UsageError(f"account add: security must be tls, starttls or none, not {sec!r}")
    user = args.user or address
    smtp_user = user if args.smtp_user is None else (args.smtp_user or None)
    cmd = args.password_command or None
    oauth = bool(args.oauth2 or args.token_command)
    if oauth and cmd:
        raise UsageError("account add: use either a password (--password-command) or OAuth2, not both")
    common = dict(security=security, user=user, password_command=cmd, cafile=args.cafile,
                  auth="oauth2" if oauth else "password")
    if kind == "imap":
        server_in = dict(imap=config.Server(host, port, **common))
    else:
        server_in = dict(pop3=config.Pop3Server(host, port, **common, mode=args.pop3_mode,
                                                leave_days=args.leave_days))
    account = config.Account(
        name=name, address=address, display_name=display or "", **server_in,
        smtp=config.Server(shost, sport, security=ssec, user=smtp_user, password_command=cmd,
                           cafile=args.cafile, auth="oauth2" if oauth else "password"),
        password_command=cmd,     # saved once, at account level: both servers inherit it
        token_command=args.token_command or None, oauth2=_oauth2_table(args))

    password = None
    tokens = None
    if oauth:
        tokens = oauth2_sign_in(account, args, io)
    elif cmd is None:
        if args.password_stdin:
            line = io.stdin.readline() if io.stdin is not None else ""
            password = line.rstrip("\r\n")
        elif io.interactive:
            password = _ask(io, f"Password for {user}", password=True)
        if not password:
            raise UsageError("account add: no password: use --password-stdin, --password-command, "
                             "or run it in a terminal to be asked")
    else:
        password = secrets.run_password_command(cmd, name)

    pins: dict[str, str] = {}
    if not args.no_test:
        io.out.print(f"Testing the connection for {name}…")
        if not check_servers(args, account, io, passwords={"imap": password, "pop3": password,
                                                           "smtp": password}, pins=pins):
            io.err.print("[bold red]error:[/] not saved: fix the settings above and try again "
                         "(or add --no-test to save anyway)", highlight=False)
            return EXIT_FAIL
    if pins:
        import dataclasses

        account = dataclasses.replace(account, **{k: dataclasses.replace(getattr(account, k), tls_fingerprint=fp)
                                                  for k, fp in pins.items()})
    if tokens is not None:
        from tui_mail.oauth2 import save_refresh_token

        save_refresh_token(name, tokens.refresh_token)   # SecretError names the alternatives
    elif cmd is None and not oauth:
        secrets.set_password(name, password)   # SecretError names the alternatives
    existed = any(a.name == name for a in config.load_config(args.config).accounts)
    path = config.save_account(account, args.config)
    where = ("" if cmd or args.token_command else
             "; the OAuth2 refresh token is in the keyring" if oauth else "; the password is in the keyring")
    io.out.print(f"{'Updated' if existed else 'Saved'} account [bold]{_escape(name)}[/] in {_escape(str(path))}"
                 + where, highlight=False)
    return EXIT_OK


def _oauth2_table(args) -> dict:
    """[accounts.oauth2] from the command line (empty unless --oauth2)."""
    if not args.oauth2:
        return {}
    if not args.client_id:
        raise UsageError("account add: --oauth2 needs --client-id (register an app with your provider; "
                         "the README says how)")
    table = {"provider": args.oauth2, "client_id": args.client_id}
    for key in ("client_secret", "tenant", "auth_url", "token_url", "device_url", "scope"):
        if getattr(args, key, None):
            table[key] = getattr(args, key)
    if args.oauth2 == "custom" and not args.token_url:
        raise UsageError("account add: --oauth2 custom needs --token-url (and --auth-url or --device-url)")
    return table


def oauth2_sign_in(account, args, io: Io):
    """Run the sign-in (or check the token command) and make this process use its tokens;
    returns the Tokens to keep (None with --token-command)."""
    from tui_mail import oauth2

    if args.token_command:
        oauth2.prime(account, oauth2.TokenSource(account.name, token_command=args.token_command))
        return None
    table = account.oauth2
    ep = oauth2.Endpoints.from_config(table)
    flow = args.oauth2_flow or ("device" if (table["provider"] == "microsoft" or not ep.auth_url) else "browser")

    def tell(text: str) -> None:
        io.out.print(_escape(text), highlight=False, soft_wrap=True)

    tokens = oauth2.device_flow(ep, tell) if flow == "device" else oauth2.browser_flow(ep, tell)
    if not tokens.refresh_token:
        raise MailError("the provider gave no refresh token (ask for offline access, e.g. the "
                        "offline_access scope) so tui-mail could not log in again later")
    oauth2.prime(account, oauth2.TokenSource(account.name, oauth2=table, tokens=tokens))
    io.out.print("Signed in.")
    return tokens
