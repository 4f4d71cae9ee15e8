"""config.toml: the client's accounts and UI settings, loaded once into frozen dataclasses.

File: ``--config`` (explicit path), else ``$TUI_MAIL_CONFIG``, else
``$XDG_CONFIG_HOME/tui-mail/config.toml`` (platformdirs). A missing file is an empty config
(no accounts, default UI). A wrong file raises ConfigError naming the file, the line, the key
and the fix. Passwords are never in this file: they live in the keyring, or come from
``password_command`` (see tui_mail.secrets); ``save_account`` cannot write one.

Example::

    [ui]
    mark_read = "open"          # "open": the reader marks read on open | "never"
    mark_read_delay = 2         # seconds the preview rests on a message before it is read; 0: never
    theme = "textual-dark"
    preview = true

    [keys]                      # action id = key (also accepted as [ui.keys])
    delete = "x"

    [[accounts]]
    name = "work"
    address = "bob@example.org"
    display_name = "Bob"
    signature = "-- \\nBob"
    [accounts.imap]             # or [accounts.pop3] with mode = "keep"|"delete"|"leave", leave_days
    host = "imap.example.org"
    port = 993                  # optional: from security (993/143, 995/110, 465/587)
    security = "tls"            # tls | starttls | none
    user = "bob"                # optional: the address
    password_command = "pass show mail/work"   # optional: else the keyring
    auth = "password"           # password | oauth2 (XOAUTH2 / OAUTHBEARER)
    token_command = "oauth2-token work"        # oauth2: prints an access token (else the built-in flow)
    cafile = "/etc/ssl/my-ca.pem"              # optional: trusted in addition to the system CAs
    tls_fingerprint = "sha256:AB:CD:…"         # optional: pin this certificate (self-signed servers)
    tls_verify = true           # false: no certificate check at all (warned on every connect)
    [accounts.smtp]
    host = "smtp.example.org"
    security = "starttls"

An account-level ``password_command`` or ``token_command`` (next to ``name``) applies to
every server of the account that does not set its own. ``[accounts.oauth2]`` holds the
built-in OAuth2 flow's settings (``provider``, ``client_id``…; see tui_mail.oauth2).
    [accounts.roles]            # optional overrides of auto-detected folder roles
    sent = "Sent Items"
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from tui_mail.errors import ConfigError

APP = "tui-mail"
SECURITY = ("tls", "starttls", "none")
POP3_MODES = ("keep", "delete", "leave")
ROLE_KEYS = ("inbox", "sent", "drafts", "trash", "junk", "archive")
AUTH_METHODS = ("password", "oauth2")
_SERVER_KEYS = {"host", "port", "security", "user", "password_command", "cafile", "auth", "token_command",
                "tls_fingerprint", "tls_verify", "login_deadline", "command_deadline", "max_literal_mb"}
# Hostile-server limits (tui_mail.store.guard): key → (default, lowest, highest)
_LIMITS = {"login_deadline": (60.0, 1, 3600), "command_deadline": (300.0, 1, 86400),
           "max_literal_mb": (64, 1, 4096)}
_POP3_KEYS = _SERVER_KEYS | {"mode", "leave_days"}
_INHERITED = ("password_command", "token_command")   # account level → each server without its own
_ACCOUNT_KEYS = {"name", "address", "display_name", "signature", "imap", "pop3", "smtp", "roles",
                 "oauth2", *_INHERITED}
_OAUTH2_KEYS = {"provider", "client_id", "client_secret", "auth_url", "token_url", "device_url", "scope",
                "tenant", "redirect_port"}
_FINGERPRINT = re.compile(r"sha256:([0-9A-Fa-f]{2}(?::?[0-9A-Fa-f]{2}){31})")
_UI_KEYS = {"mark_read", "mark_read_delay", "theme", "preview", "keys", "address_book_command",
            "address_book_dir", "notify_command", "notify_terminal"}
NOTIFY_TERMINAL = ("auto", "osc9", "osc777", "off")


@dataclass(frozen=True)
class Server:
    host: str
    port: int | None = None        # None: the standard port for ``security``
    security: str = "tls"
    user: str | None = None        # None: the account's address
    password_command: str | None = None
    cafile: str | None = None
    auth: str = "password"         # password | oauth2
    token_command: str | None = None
    tls_fingerprint: str | None = None   # "sha256:<64 hex>", normalised lower-case without colons
    tls_verify: bool = True
    login_deadline: float = 60.0   # seconds for connect + greeting + TLS + login, whatever the pace
    command_deadline: float = 300.0  # seconds for one command and its whole answer
    max_literal_mb: int = 64       # largest IMAP literal / POP3 message / SMTP reply accepted


@dataclass(frozen=True)
class Pop3Server(Server):
    mode: str = "keep"             # keep | delete | leave (leave on server leave_days days)
    leave_days: int = 14


@dataclass(frozen=True)
class Account:
    name: str
    address: str
    display_name: str = ""
    signature: str = ""
    imap: Server | None = None
    pop3: Pop3Server | None = None
    smtp: Server | None = None
    roles: dict[str, str] = field(default_factory=dict)
    oauth2: dict[str, Any] = field(default_factory=dict)    # [accounts.oauth2]: the built-in flow
    password_command: str | None = None     # account level: for servers without their own
    token_command: str | None = None

    @property
    def incoming(self) -> Server:
        return self.imap or self.pop3  # type: ignore[return-value]


@dataclass(frozen=True)
class UISettings:
    mark_read: str = "open"        # "open" | "never" ("delay:N" in the file: open, delay N)
    mark_read_delay: float = 2.0   # seconds the preview must rest on a message; 0: never
    theme: str | None = None
    preview: bool = True
    keys: dict[str, str] = field(default_factory=dict)
    address_book_command: str | None = None   # prints "address<TAB>name" lines (aerc); no shell
    address_book_dir: str | None = None       # a directory of .vcf files
    notify_command: str | None = None         # run on new mail: argv + sender + subject; no shell
    notify_terminal: str = "auto"             # auto | osc9 | osc777 | off: the terminal's own notification


@dataclass(frozen=True)
class Config:
    path: Path
    accounts: tuple[Account, ...] = ()
    ui: UISettings = UISettings()

    def account(self, name: str) -> Account:
        for a in self.accounts:
            if a.name == name:
                return a
        known = ", ".join(a.name for a in self.accounts) or "none configured"
        raise ConfigError(str(self.path), None, None, f"no account named {name!r} ({known})",
                          "run `tui-mail account add` or check the name")


# --- locations --------------------------------------------------------------------------

def config_path(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("TUI_MAIL_CONFIG")
    if env:
        return Path(env)
    return Path(platformdirs.user_config_dir(APP, appauthor=False)) / "config.toml"


def data_dir() -> Path:
    env = os.environ.get("TUI_MAIL_DATA")
    return Path(env) if env else Path(platformdirs.user_data_dir(APP, appauthor=False))


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP, appauthor=False))


# --- loading ----------------------------------------------------------------------------

class _Lines:
    """Finds the line of a key for error messages (tomllib gives lines only for syntax)."""

    def __init__(self, text: str):
        self.lines = text.splitlines()

    def find(self, key: str, table: str | None = None, nth: int = 0) -> int | None:
        """Line (1-based) of ``key =`` inside the nth ``[[accounts]]`` (and ``[accounts.table]``)
        or, with nth < 0, anywhere."""
        start, end = 0, len(self.lines)
        if nth >= 0:
            heads = [i for i, l in enumerate(self.lines) if l.strip().startswith("[[accounts]]")]
            if nth < len(heads):
                start = heads[nth]
                end = heads[nth + 1] if nth + 1 < len(heads) else len(self.lines)
            if table:
                for i in range(start, end):
                    if re.match(rf"\s*\[accounts\.{re.escape(table)}\]", self.lines[i]):
                        start = i
                        break
        rx = re.compile(rf"\s*\"?{re.escape(key)}\"?\s*=")
        for i in range(start, end):
            if rx.match(self.lines[i]):
                return i + 1
        return start + 1 if nth >= 0 and start < len(self.lines) else None


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Read and validate config.toml (see the module docstring); missing file → empty."""
    p = config_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config(p)
    except (OSError, UnicodeError) as e:
        raise ConfigError(str(p), None, None, f"cannot read the file: {e}", "check its permissions") from None
    return parse_config(text, p)


def parse_config(text: str, path: str | os.PathLike = "config.toml") -> Config:
    p = Path(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"at line (\d+)", str(e))
        raise ConfigError(str(p), int(m.group(1)) if m else None, None, f"not valid TOML: {e}",
                          "fix the syntax (quotes around strings, [table] headers)") from None
    lines = _Lines(text)
    unknown = set(doc) - {"ui", "keys", "accounts"}
    if unknown:
        k = sorted(unknown)[0]
        raise ConfigError(str(p), lines.find(k, nth=-1), k, "unknown setting",
                          "use [ui], [keys] or [[accounts]]")
    ui = _parse_ui(doc, p, lines)
    raw_accounts = doc.get("accounts", [])
    if not isinstance(raw_accounts, list):
        raise ConfigError(str(p), lines.find("accounts", nth=-1), "accounts", "must be a list of tables",
                          "write each account as [[accounts]]")
    accounts, names = [], set()
    for i, raw in enumerate(raw_accounts):
        acc = _parse_account(raw, i, p, lines)
        if acc.name in names:
            raise ConfigError(str(p), lines.find("name", nth=i), "accounts.name",
                              f"two accounts are named {acc.name!r}", "give each account its own name")
        names.add(acc.name)
        accounts.append(acc)
    return Config(p, tuple(accounts), ui)


def _parse_ui(doc: dict, p: Path, lines: _Lines) -> UISettings:
    ui = doc.get("ui", {})
    if not isinstance(ui, dict):
        raise ConfigError(str(p), lines.find("ui", nth=-1), "ui", "must be a table", "write [ui]")
    for k in ui:
        if k not in _UI_KEYS:
            raise ConfigError(str(p), lines.find(k, nth=-1), f"ui.{k}", "unknown setting",
                              f"use one of {', '.join(sorted(_UI_KEYS))}")
    mark = ui.get("mark_read", "open")
    delay = 0.0
    m = re.fullmatch(r"delay:(\d+(?:\.\d+)?)", mark) if isinstance(mark, str) else None
    if m:
        mark, delay = "delay", float(m.group(1))
    elif mark not in ("open", "never"):
        raise ConfigError(str(p), lines.find("mark_read", nth=-1), "ui.mark_read",
                          f"{mark!r} is not a mark_read mode", 'use "open", "delay:N" (seconds) or "never"')
    theme = ui.get("theme")
    if theme is not None and not isinstance(theme, str):
        raise ConfigError(str(p), lines.find("theme", nth=-1), "ui.theme", "must be a string",
                          'e.g. theme = "textual-dark"')
    preview = ui.get("preview", True)
    if not isinstance(preview, bool):
        raise ConfigError(str(p), lines.find("preview", nth=-1), "ui.preview", "must be true or false",
                          "preview = true")
    if "mark_read_delay" in ui:
        delay = ui["mark_read_delay"]
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 3600:
            raise ConfigError(str(p), lines.find("mark_read_delay", nth=-1), "ui.mark_read_delay",
                              "must be seconds from 0 to 3600", "mark_read_delay = 2  (0: never from the preview)")
        delay = float(delay)
    elif mark == "open":
        delay = UISettings.mark_read_delay
    keys: dict[str, str] = {}
    for where, table in (("keys", doc.get("keys", {})), ("ui.keys", ui.get("keys", {}))):
        # [keys.reader] reply = "e" is the id reader.reply (one id space for every screen)
        flat = _flatten_keys(table) if isinstance(table, dict) else None
        if flat is None or not all(isinstance(v, str) for v in flat.values()):
            raise ConfigError(str(p), lines.find(where.split(".")[-1], nth=-1), where,
                              "must map action ids to key names", 'e.g. [keys] delete = "x"')
        keys.update(flat)
    extra: dict[str, str | None] = {}
    for k in ("address_book_command", "address_book_dir", "notify_command"):
        v = ui.get(k)
        if v is not None and (not isinstance(v, str) or "\n" in v):
            raise ConfigError(str(p), lines.find(k, nth=-1), f"ui.{k}", "must be one line of text",
                              f'e.g. {k} = "{_UI_EXAMPLES[k]}"')
        extra[k] = v or None
    terminal = ui.get("notify_terminal", "auto")
    if terminal not in NOTIFY_TERMINAL:
        raise ConfigError(str(p), lines.find("notify_terminal", nth=-1), "ui.notify_terminal",
                          f"{terminal!r} is not a notification kind", 'use "auto", "osc9", "osc777" or "off"')
    return UISettings(mark, delay, theme, preview, keys, notify_terminal=terminal, **extra)


_UI_EXAMPLES = {"address_book_command": "khard email --parsable --remove-first-line",
                "address_book_dir": "~/.local/share/contacts", "notify_command": "notify-send -a tui-mail"}


def _flatten_keys(table: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in table.items():
        if isinstance(v, dict):
            out.update(_flatten_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _parse_account(raw: Any, i: int, p: Path, lines: _Lines) -> Account:
    f = str(p)
    if not isinstance(raw, dict):
        raise ConfigError(f, None, f"accounts[{i}]", "must be a table", "write [[accounts]]")

    def err(key: str, expected: str, fix: str, table: str | None = None) -> ConfigError:
        short = key.split(".")[-1]
        return ConfigError(f, lines.find(short, table, nth=i), f"accounts[{i}].{key}", expected, fix)

    for k in raw:
        if k not in _ACCOUNT_KEYS:
            raise err(k, "unknown setting", f"use one of {', '.join(sorted(_ACCOUNT_KEYS))}")
    for k in ("name", "address"):
        if not isinstance(raw.get(k), str) or not raw[k].strip():
            raise err(k, "is missing" if k not in raw else "must be a non-empty string",
                      f'add {k} = "…" to this [[accounts]] entry')
    if "@" not in raw["address"]:
        raise err("address", f"{raw['address']!r} is not an e-mail address", 'e.g. "bob@example.org"')
    for k in ("display_name", "signature", *_INHERITED):
        if k in raw and not isinstance(raw[k], str):
            raise err(k, "must be a string", f'{k} = "…"')
    if ("imap" in raw) == ("pop3" in raw):
        raise err("imap", "needs exactly one of [accounts.imap] or [accounts.pop3]",
                  "keep one incoming server per account")
    inherited = {k: raw.get(k) or None for k in _INHERITED}
    imap = _server(raw["imap"], "imap", err, inherited) if "imap" in raw else None
    pop3 = _server(raw["pop3"], "pop3", err, inherited) if "pop3" in raw else None
    smtp = _server(raw["smtp"], "smtp", err, inherited) if "smtp" in raw else None
    oauth2 = raw.get("oauth2", {})
    if not isinstance(oauth2, dict):
        raise err("oauth2", "must be a table", '[accounts.oauth2] provider = "google"')
    for k, v in oauth2.items():
        if k not in _OAUTH2_KEYS:
            raise err(f"oauth2.{k}", "unknown setting", f"use one of {', '.join(sorted(_OAUTH2_KEYS))}", "oauth2")
        if not isinstance(v, int if k == "redirect_port" else str) or isinstance(v, bool):
            raise err(f"oauth2.{k}", "has the wrong type", f'{k} = {"8080" if k == "redirect_port" else chr(34) + "…" + chr(34)}',
                      "oauth2")
    if oauth2 and oauth2.get("provider", "custom") not in ("google", "microsoft", "custom"):
        raise err("oauth2.provider", f"{oauth2['provider']!r} is not a provider", 'use "google", "microsoft" or "custom"',
                  "oauth2")
    roles = raw.get("roles", {})
    if not isinstance(roles, dict):
        raise err("roles", "must be a table", "[accounts.roles] sent = \"Sent Items\"")
    for k, v in roles.items():
        if k not in ROLE_KEYS:
            raise err(f"roles.{k}", "is not a folder role", f"use one of {', '.join(ROLE_KEYS)}", "roles")
        if not isinstance(v, str) or not v:
            raise err(f"roles.{k}", "must be a folder name", f'{k} = "Folder name"', "roles")
    return Account(name=raw["name"], address=raw["address"], display_name=raw.get("display_name", ""),
                   signature=raw.get("signature", ""), imap=imap, pop3=pop3, smtp=smtp, roles=dict(roles),
                   oauth2=dict(oauth2), **inherited)


def normalise_fingerprint(text: str) -> str | None:
    """``sha256:AB:CD:…`` / ``sha256:abcd…`` → ``sha256:abcd…`` (64 lower-case hex), or None."""
    m = _FINGERPRINT.fullmatch(text.strip())
    return "sha256:" + m.group(1).replace(":", "").lower() if m else None


def _server(raw: Any, kind: str, err, inherited: dict | None = None) -> Server:
    if not isinstance(raw, dict):
        raise err(kind, "must be a table", f"write [accounts.{kind}] with host = \"…\"")
    allowed = _POP3_KEYS if kind == "pop3" else _SERVER_KEYS
    for k in raw:
        if k not in allowed:
            raise err(f"{kind}.{k}", "unknown setting", f"use one of {', '.join(sorted(allowed))}", kind)
    if not isinstance(raw.get("host"), str) or not raw["host"]:
        raise err(f"{kind}.host", "is missing", f'add host = "mail.example.org" under [accounts.{kind}]', kind)
    port = raw.get("port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536):
        raise err(f"{kind}.port", f"{port!r} is not a port number", "use 1–65535, or leave it out", kind)
    default_sec = "starttls" if kind == "smtp" else "tls"
    sec = raw.get("security", default_sec)
    if sec not in SECURITY:
        raise err(f"{kind}.security", f"{sec!r} is not a security mode", 'use "tls", "starttls" or "none"', kind)
    for k in ("user", "password_command", "cafile", "token_command", "tls_fingerprint", "auth"):
        if k in raw and not isinstance(raw[k], str):
            raise err(f"{kind}.{k}", "must be a string", f'{k} = "…"', kind)
    auth = raw.get("auth", "password")
    if auth not in AUTH_METHODS:
        raise err(f"{kind}.auth", f"{auth!r} is not a login method", 'use "password" or "oauth2"', kind)
    fingerprint = None
    if raw.get("tls_fingerprint"):
        fingerprint = normalise_fingerprint(raw["tls_fingerprint"])
        if fingerprint is None:
            raise err(f"{kind}.tls_fingerprint", "is not a SHA-256 certificate fingerprint",
                      'tls_fingerprint = "sha256:…" (64 hex digits, as `tui-mail account test` shows it)', kind)
    verify = raw.get("tls_verify", True)
    if not isinstance(verify, bool):
        raise err(f"{kind}.tls_verify", "must be true or false", "tls_verify = true", kind)
    limits = {}
    for k, (default, low, high) in _LIMITS.items():
        value = raw.get(k, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise err(f"{kind}.{k}", f"{value!r} is out of range", f"{k} = {default} (from {low} to {high})", kind)
        limits[k] = int(value) if k == "max_literal_mb" else float(value)
    inherited = inherited or {}
    common = dict(host=raw["host"], port=port, security=sec, user=raw.get("user") or None,
                  password_command=raw.get("password_command") or inherited.get("password_command"),
                  cafile=raw.get("cafile") or None, auth=auth,
                  token_command=raw.get("token_command") or inherited.get("token_command"),
                  tls_fingerprint=fingerprint, tls_verify=verify, **limits)
    if kind != "pop3":
        return Server(**common)
    mode = raw.get("mode", "keep")
    if mode == "leave_days":
        mode = "leave"
    if mode not in POP3_MODES:
        raise err("pop3.mode", f"{mode!r} is not a POP3 mode", 'use "keep", "delete" or "leave"', kind)
    days = raw.get("leave_days", 14)
    if not isinstance(days, int) or isinstance(days, bool) or days < 0:
        raise err("pop3.leave_days", f"{days!r} is not a number of days", "leave_days = 14", kind)
    return Pop3Server(**common, mode=mode, leave_days=days)


# --- saving -----------------------------------------------------------------------------

def account_to_toml(account: Account) -> dict:
    """The [[accounts]] table for ``account`` (no password or token: there is no field for one).
    Server settings equal to the account-level ``password_command``/``token_command`` are
    left to inheritance."""
    out: dict[str, Any] = {"name": account.name, "address": account.address}
    if account.display_name:
        out["display_name"] = account.display_name
    if account.signature:
        out["signature"] = account.signature
    for k in _INHERITED:
        if getattr(account, k):
            out[k] = getattr(account, k)
    for kind in ("imap", "pop3", "smtp"):
        s = getattr(account, kind)
        if s is None:
            continue
        t: dict[str, Any] = {"host": s.host, "security": s.security}
        for k in ("port", "user", "password_command", "cafile", "token_command", "tls_fingerprint"):
            v = getattr(s, k)
            if v is not None and not (k in _INHERITED and v == getattr(account, k)):
                t[k] = v
        if s.auth != "password":
            t["auth"] = s.auth
        if not s.tls_verify:
            t["tls_verify"] = False
        if isinstance(s, Pop3Server):
            t["mode"], t["leave_days"] = s.mode, s.leave_days
        out[kind] = t
    if account.roles:
        out["roles"] = dict(account.roles)
    if account.oauth2:
        out["oauth2"] = dict(account.oauth2)
    return out


def _update_table(table, new: dict) -> None:
    """Make the tomlkit ``table`` hold exactly ``new``, changing only what differs, so the
    comments and the order of the keys that stay are kept."""
    import tomlkit

    for k in [k for k in table if k not in new]:
        del table[k]
    for k, v in new.items():
        if isinstance(v, dict):
            if k in table and isinstance(table[k], dict) and not isinstance(table[k], tomlkit.items.InlineTable):
                _update_table(table[k], v)
            else:
                sub = tomlkit.table()
                for kk, vv in v.items():
                    sub[kk] = vv
                table[k] = sub
        elif k not in table or table[k] != v:
            table[k] = v


def save_account(account: Account, path: str | os.PathLike | None = None) -> Path:
    """Add ``account`` to config.toml, or update the account of the same name in place; the
    rest of the file (other settings, comments, ``[[accounts]]`` layout) is kept as the user
    wrote it (tomlkit). Written atomically (temp file + rename), mode 0600."""
    import tomlkit  # here, not at the top: every start reads config.toml, only this writes it

    p = config_path(path)
    text = ""
    if p.exists():
        text = p.read_text(encoding="utf-8")
        parse_config(text, p)          # refuse to rewrite a file we would misread
    doc = tomlkit.parse(text)
    new = account_to_toml(account)
    accounts = doc.get("accounts")
    if accounts is None:
        accounts = tomlkit.aot()
        doc.append("accounts", accounts)
    for table in accounts:
        if table.get("name") == account.name:
            _update_table(table, new)
            break
    else:
        table = tomlkit.table()
        _update_table(table, new)
        accounts.append(table)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".toml", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(tomlkit.dumps(doc))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p
