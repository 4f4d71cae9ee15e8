"""relay.toml: the relay's configuration, loaded once into frozen dataclasses.

Every key has a default (see DEFAULT_TOML), so a missing file means "run with defaults".
A bad file raises ConfigError naming the file, the line, the key, what was expected and
how to fix it; the relay refuses to start rather than guess.

Resolution order for the file: explicit path (``--config``), ``$TUI_MAIL_RELAY_CONFIG``,
``$XDG_CONFIG_HOME/tui-mail/relay.toml``. For the data dir: ``--data-dir``,
``$TUI_MAIL_RELAY_DATA``, ``data_dir`` in the file, ``$XDG_DATA_HOME/tui-mail/relay``.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from relay.errors import ConfigError

DEFAULT_TOML = """\
# relay.toml: configuration of the tui-mail relay. Every key is optional.
hostname = "localhost"            # name used in EHLO, Received and bounces
domains = ["localhost"]           # local domains: mail for them is delivered here
# data_dir = "/var/lib/tui-mail"  # queue/, mail/, users, certs, log, pid

[listen]                          # "host:port"; "" disables a listener
smtp = "127.0.0.1:2525"           # inbound (MX) SMTP: local domains only, no AUTH
submission = "127.0.0.1:2587"     # submission: AUTH required, relays anywhere
imap = "127.0.0.1:1143"
pop3 = "127.0.0.1:1110"
# http = "127.0.0.1:8026"         # sink's HTTP JSON API (loopback only); on by default with [sink]
# implicit TLS (TLS from the first byte, like ports 993/995/465); off unless set:
# imaps = "127.0.0.1:1993"
# pop3s = "127.0.0.1:1995"
# submissions = "127.0.0.1:2465"

[queue]
first_retry = "1m"                # first retry after a temporary failure
retry_interval = "30m"            # then every retry_interval
max_lifetime = "5d"               # give up and bounce after this long
delay_warning = "4h"              # tell the sender once after this long ("0" = never)
max_message_size = 26214400       # bytes (25 MiB)
max_recipients = 1000
max_hops = 50                     # Received headers before a message is a loop
max_line_length = 1000            # octets per line, CRLF included (RFC 5321 4.5.3.1.6)

[delivery]
max_messages_per_connection = 100
max_connections_per_destination = 4
connect_timeout = "30s"
initial_concurrency = 2           # connections per destination at first (slow start up to the max)
max_connections = 100             # onward connections in all, shared out round-robin
dead_after = 3                    # failed connections in a row before a destination is "dead"
greeting_timeout = "5m"           # RFC 5321 4.5.3.2 timeouts for onward SMTP
command_timeout = "5m"            # MAIL, RCPT (and EHLO, RSET)
data_timeout = "2m"               # the 354 after DATA
data_block_timeout = "3m"         # each block of message data written
data_done_timeout = "10m"         # the reply after the final dot

[auth]
allow_plaintext_loopback = true   # AUTH/LOGIN without TLS, but only from 127.0.0.1 and ::1

[limits]                          # per listener (smtp, submission, imap, pop3)
max_connections = 500             # open connections in total; more get 421 / * BYE / -ERR
max_connections_per_ip = 50       # open connections from one client address
login_timeout = "60s"             # IMAP and POP3: idle time allowed before logging in
idle_timeout = "30m"              # IMAP and POP3 after login (SMTP: 5 minutes, RFC 5321)
max_errors = 20                   # SMTP error replies in one session before 421 and close

[process]                         # one master (queue, delivery, control) + accept/serve workers
workers = "auto"                  # worker processes: "auto" = CPUs (at most 4), or 1..16; 1 = one process

[senders]                         # addresses a login may use besides its own (MAIL FROM, From:)
# "alice@example.org" = ["postmaster@example.org", "sales@example.org"]

[tls]
cert = ""                         # PEM files; empty: a self-signed pair is made on first start
key = ""

[routes]                          # static routes: "domain" = "host:port"
# "hamburger.edu" = "127.0.0.1:2526"

[dns]
nameservers = []                  # e.g. ["127.0.0.1:5353"]; empty: the system resolver

[sink]                            # a local test mail server: catch all mail, deliver nothing onward
enabled = false                   # also: tui-mail relay start --sink
password = ""                     # IMAP/POP3/AUTH password of user "sink"; "" = random, in <data_dir>/sink.password

# [smarthost]                     # send all non-local mail through one server
# host = "smtp.example.com"
# port = 587
# security = "starttls"           # tls | starttls | none
# user = "me@example.com"
# password = "..."
"""

_SIMPLE_ADDRESS = re.compile(r"^[^\s@<>]+@[^\s@<>]+$")
_YEAR = 366 * 86400.0
MAX_MESSAGE_SIZE = 2 ** 31 - 1    # bytes; the SIZE limit we can advertise and check (2 GiB)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ListenConfig:
    smtp: Address | None = Address("127.0.0.1", 2525)
    submission: Address | None = Address("127.0.0.1", 2587)
    imap: Address | None = Address("127.0.0.1", 1143)
    pop3: Address | None = Address("127.0.0.1", 1110)
    http: Address | None = None   # the sink's HTTP API (relay/sink/http.py); loopback only
    imaps: Address | None = None          # implicit-TLS listeners: off by default
    pop3s: Address | None = None
    submissions: Address | None = None


@dataclass(frozen=True)
class QueueConfig:
    first_retry: float = 60.0
    retry_interval: float = 1800.0
    max_lifetime: float = 5 * 86400.0
    delay_warning: float = 4 * 3600.0
    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 1000
    max_hops: int = 50
    max_line_length: int = 1000


@dataclass(frozen=True)
class DeliveryConfig:
    max_messages_per_connection: int = 100
    max_connections_per_destination: int = 4
    connect_timeout: float = 30.0
    initial_concurrency: int = 2
    max_connections: int = 100
    dead_after: int = 3
    greeting_timeout: float = 300.0
    command_timeout: float = 300.0
    data_timeout: float = 120.0
    data_block_timeout: float = 180.0
    data_done_timeout: float = 600.0


@dataclass(frozen=True)
class AuthConfig:
    allow_plaintext_loopback: bool = True


@dataclass(frozen=True)
class LimitsConfig:
    max_connections: int = 500
    max_connections_per_ip: int = 50
    login_timeout: float = 60.0
    idle_timeout: float = 1800.0
    max_errors: int = 20


@dataclass(frozen=True)
class ProcessConfig:
    workers: int | str = "auto"    # "auto" or 1..16; relay/workers.py worker_count() resolves it


MAX_WORKERS = 16


@dataclass(frozen=True)
class SinkConfig:
    enabled: bool = False
    password: str = field(default="", repr=False)  # never in reprs, logs or dumps


SINK_HTTP_DEFAULT = Address("127.0.0.1", 8026)


@dataclass(frozen=True)
class TLSConfig:
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class Route:
    host: str
    port: int
    require_tls: bool = False


@dataclass(frozen=True)
class SmarthostConfig:
    host: str
    port: int = 587
    security: str = "starttls"
    user: str = ""
    password: str = field(default="", repr=False)  # never in reprs, logs or dumps


@dataclass(frozen=True)
class DNSConfig:
    nameservers: tuple[Address, ...] = ()


@dataclass(frozen=True)
class RelayConfig:
    data_dir: Path
    path: Path | None = None
    hostname: str = "localhost"
    domains: tuple[str, ...] = ("localhost",)
    listen: ListenConfig = ListenConfig()
    queue: QueueConfig = QueueConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    auth: AuthConfig = AuthConfig()
    tls: TLSConfig = TLSConfig()
    routes: dict[str, Route] = field(default_factory=dict)
    smarthost: SmarthostConfig | None = None
    dns: DNSConfig = DNSConfig()
    limits: LimitsConfig = LimitsConfig()
    senders: dict[str, tuple[str, ...]] = field(default_factory=dict)  # login -> extra addresses
    sink: SinkConfig = SinkConfig()
    process: ProcessConfig = ProcessConfig()

    def allowed_senders(self, login: str) -> frozenset[str]:
        """Addresses ``login`` may send as: its own plus its [senders] entries (lower case)."""
        login = login.lower()
        return frozenset((login, *self.senders.get(login, ())))

    # Paths inside the data dir, one place so every module agrees.
    @property
    def queue_dir(self) -> Path:
        return self.data_dir / "queue"

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def users_file(self) -> Path:
        return self.data_dir / "users"

    @property
    def certs_dir(self) -> Path:
        return self.data_dir / "certs"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "relay.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "relay.pid"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "relay.state.json"

    @property
    def control_socket(self) -> Path:
        return self.data_dir / "control.sock"

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower().rstrip(".") in self.domains


def default_config_path() -> Path:
    env = os.environ.get("TUI_MAIL_RELAY_CONFIG")
    if env:
        return Path(env)
    return Path(platformdirs.user_config_dir("tui-mail")) / "relay.toml"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("tui-mail")) / "relay"


def load_config(path: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None) -> RelayConfig:
    """Load relay.toml (defaults when the file does not exist and no path was forced)."""
    explicit = path is not None
    cfg_path = Path(path) if explicit else default_config_path()
    text = ""
    if cfg_path.exists():
        try:
            text = cfg_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(str(cfg_path), None, None, f"cannot read the file: {e}") from None
    elif explicit:
        raise ConfigError(str(cfg_path), None, None, "the file does not exist",
                          fix="check the path, or omit --config to use the defaults")
    else:
        cfg_path = None  # type: ignore[assignment]
    return parse_config(text, cfg_path, data_dir)


def parse_config(text: str, path: Path | None = None, data_dir: str | os.PathLike | None = None) -> RelayConfig:
    """Parse the TOML text of a relay.toml; pure apart from the data-dir default."""
    fname = str(path) if path else "<relay.toml>"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ConfigError(fname, int(m.group(1)) if m else None, None, f"not valid TOML: {e}",
                          fix="see https://toml.io for the syntax") from None
    v = _Validator(fname, text)
    known_top = {"hostname", "domains", "data_dir", "listen", "queue", "delivery", "auth", "tls",
                 "routes", "dns", "smarthost", "limits", "senders", "sink", "process"}
    v.unknown_keys(raw, known_top, "")

    hostname = v.string(raw, "hostname", "localhost", "")
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", hostname):
        v.fail("hostname", "expected a host name such as \"mail.example.org\"")
    domains_raw = v.get(raw, "domains", ["localhost"], list, "a list of domain names, e.g. [\"example.org\"]", "")
    domains = []
    for d in domains_raw:
        if not isinstance(d, str) or not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\.?", d):
            v.fail("domains", f"{d!r} is not a domain name")
        domains.append(d.lower().rstrip("."))

    if data_dir is None:
        data_dir = os.environ.get("TUI_MAIL_RELAY_DATA") or None
    if data_dir is None and "data_dir" in raw:
        data_dir = v.string(raw, "data_dir", "", "")
    ddir = Path(data_dir).expanduser() if data_dir else default_data_dir()

    t = v.table(raw, "sink")
    v.unknown_keys(t, {"enabled", "password"}, "sink")
    sink = SinkConfig(enabled=v.get(t, "enabled", False, bool, "true or false", "sink"),
                      password=v.string(t, "password", "", "sink"))

    t = v.table(raw, "listen")
    names = ("smtp", "submission", "imap", "pop3", "imaps", "pop3s", "submissions")
    v.unknown_keys(t, set(names) | {"http"}, "listen")
    d = ListenConfig()
    listen = ListenConfig(**{k: v.address(t, k, getattr(d, k), "listen") for k in names},
                          http=v.address(t, "http", SINK_HTTP_DEFAULT if sink.enabled else None, "listen"))
    if listen.http is not None and not _loopback_host(listen.http.host):
        v.fail("listen.http", f"the HTTP API has no login and listens on loopback only, not {listen.http.host}",
               fix='write e.g. "127.0.0.1:8026"')

    t = v.table(raw, "queue")
    dq = QueueConfig()
    v.unknown_keys(t, set(dq.__dataclass_fields__), "queue")
    queue = QueueConfig(
        first_retry=v.duration(t, "first_retry", dq.first_retry, "queue", maximum=_YEAR),
        retry_interval=v.duration(t, "retry_interval", dq.retry_interval, "queue", minimum=1, maximum=_YEAR),
        max_lifetime=v.duration(t, "max_lifetime", dq.max_lifetime, "queue", minimum=1, maximum=_YEAR),
        delay_warning=v.duration(t, "delay_warning", dq.delay_warning, "queue", maximum=_YEAR),
        max_message_size=v.integer(t, "max_message_size", dq.max_message_size, "queue", minimum=1024,
                                   maximum=MAX_MESSAGE_SIZE),
        max_recipients=v.integer(t, "max_recipients", dq.max_recipients, "queue", minimum=1, maximum=100_000),
        max_hops=v.integer(t, "max_hops", dq.max_hops, "queue", minimum=1, maximum=1000),
        max_line_length=v.integer(t, "max_line_length", dq.max_line_length, "queue", minimum=78,
                                  maximum=1_000_000),
    )

    t = v.table(raw, "delivery")
    dd = DeliveryConfig()
    v.unknown_keys(t, set(dd.__dataclass_fields__), "delivery")
    delivery = DeliveryConfig(
        max_messages_per_connection=v.integer(t, "max_messages_per_connection", dd.max_messages_per_connection, "delivery",
                                              minimum=1, maximum=100_000),
        max_connections_per_destination=v.integer(t, "max_connections_per_destination", dd.max_connections_per_destination,
                                                  "delivery", minimum=1, maximum=1000),
        connect_timeout=v.duration(t, "connect_timeout", dd.connect_timeout, "delivery", minimum=0.1, maximum=3600),
        initial_concurrency=v.integer(t, "initial_concurrency", dd.initial_concurrency, "delivery", minimum=1, maximum=1000),
        max_connections=v.integer(t, "max_connections", dd.max_connections, "delivery", minimum=1, maximum=10_000),
        dead_after=v.integer(t, "dead_after", dd.dead_after, "delivery", minimum=1, maximum=1000),
        **{k: v.duration(t, k, getattr(dd, k), "delivery", minimum=0.1, maximum=86400)
           for k in ("greeting_timeout", "command_timeout", "data_timeout", "data_block_timeout", "data_done_timeout")},
    )

    t = v.table(raw, "auth")
    v.unknown_keys(t, {"allow_plaintext_loopback"}, "auth")
    auth = AuthConfig(allow_plaintext_loopback=v.get(t, "allow_plaintext_loopback", True, bool, "true or false", "auth"))

    t = v.table(raw, "limits")
    dl = LimitsConfig()
    v.unknown_keys(t, set(dl.__dataclass_fields__), "limits")
    limits = LimitsConfig(
        max_connections=v.integer(t, "max_connections", dl.max_connections, "limits", minimum=1, maximum=100_000),
        max_connections_per_ip=v.integer(t, "max_connections_per_ip", dl.max_connections_per_ip, "limits",
                                         minimum=1, maximum=100_000),
        login_timeout=v.duration(t, "login_timeout", dl.login_timeout, "limits", minimum=1, maximum=3600),
        idle_timeout=v.duration(t, "idle_timeout", dl.idle_timeout, "limits", minimum=1, maximum=86400),
        max_errors=v.integer(t, "max_errors", dl.max_errors, "limits", minimum=1, maximum=10_000),
    )

    t = v.table(raw, "process")
    v.unknown_keys(t, {"workers"}, "process")
    workers = t.get("workers", "auto")
    if workers != "auto" and (not isinstance(workers, int) or isinstance(workers, bool)
                              or not 1 <= workers <= MAX_WORKERS):
        v.fail("process.workers", f'expected "auto" or a number between 1 and {MAX_WORKERS}, got {workers!r}',
               fix='write workers = "auto", or workers = 1 for a single process')
    process = ProcessConfig(workers=workers)

    t = v.table(raw, "senders")
    senders: dict[str, tuple[str, ...]] = {}
    for login, extra in t.items():
        key = f"senders.{login}"
        if not _SIMPLE_ADDRESS.match(login):
            v.fail(key, f"{login!r} is not a mail address", fix='write e.g. "alice@example.org" = ["sales@example.org"]')
        if not isinstance(extra, list) or not all(isinstance(a, str) and _SIMPLE_ADDRESS.match(a) for a in extra):
            v.fail(key, "expected a list of mail addresses", fix='write e.g. ["sales@example.org"]')
        senders[login.lower()] = tuple(a.lower() for a in extra)

    t = v.table(raw, "tls")
    v.unknown_keys(t, {"cert", "key"}, "tls")
    cert = v.string(t, "cert", "", "tls")
    key = v.string(t, "key", "", "tls")
    if bool(cert) != bool(key):
        v.fail("tls.cert" if not cert else "tls.key", "cert and key must be given together (or both left empty)")
    for k, p in (("cert", cert), ("key", key)):
        if p and not Path(p).expanduser().is_file():
            v.fail(f"tls.{k}", f"the file {p!r} does not exist", fix="give the path to a PEM file")
    tls = TLSConfig(Path(cert).expanduser() if cert else None, Path(key).expanduser() if key else None)

    t = v.table(raw, "routes")
    routes: dict[str, Route] = {}
    for dom, target in t.items():
        key = f"routes.{dom}"
        if isinstance(target, str):
            a = _parse_address(target)
            if a is None:
                v.fail(key, f"{target!r} is not \"host:port\"", fix='write e.g. "127.0.0.1:2526"')
            routes[dom.lower().rstrip(".")] = Route(a.host, a.port)
        elif isinstance(target, dict):
            v.unknown_keys(target, {"host", "port", "require_tls"}, key)
            host = v.string(target, "host", "", key)
            if not host:
                v.fail(key + ".host", "a route table needs host")
            routes[dom.lower().rstrip(".")] = Route(host, v.integer(target, "port", 25, key, minimum=1, maximum=65535),
                                                    v.get(target, "require_tls", False, bool, "true or false", key))
        else:
            v.fail(key, "expected \"host:port\" or a table {host, port, require_tls}")

    smarthost = None
    if "smarthost" in raw:
        t = v.table(raw, "smarthost")
        v.unknown_keys(t, {"host", "port", "security", "user", "password"}, "smarthost")
        host = v.string(t, "host", "", "smarthost")
        if not host:
            v.fail("smarthost.host", "expected the smarthost's host name")
        sec = v.string(t, "security", "starttls", "smarthost")
        if sec not in ("tls", "starttls", "none"):
            v.fail("smarthost.security", f"{sec!r} is not one of tls, starttls, none")
        smarthost = SmarthostConfig(host, v.integer(t, "port", 587, "smarthost", minimum=1, maximum=65535), sec,
                                    v.string(t, "user", "", "smarthost"), v.string(t, "password", "", "smarthost"))

    t = v.table(raw, "dns")
    v.unknown_keys(t, {"nameservers"}, "dns")
    ns = []
    for item in v.get(t, "nameservers", [], list, "a list of \"host\" or \"host:port\" strings", "dns"):
        a = _parse_address(item, default_port=53) if isinstance(item, str) else None
        if a is None:
            v.fail("dns.nameservers", f"{item!r} is not \"host\" or \"host:port\"")
        ns.append(a)

    return RelayConfig(data_dir=ddir, path=path, hostname=hostname, domains=tuple(domains), listen=listen,
                       queue=queue, delivery=delivery, auth=auth, tls=tls, routes=routes, smarthost=smarthost,
                       dns=DNSConfig(tuple(ns)), limits=limits, senders=senders, sink=sink,
                       process=process)


def _loopback_host(host: str) -> bool:
    from relay.peer import is_loopback
    return host == "localhost" or is_loopback(host)


def parse_duration(value: Any) -> float | None:
    """'30m' -> 1800.0; numbers are seconds. None when not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    return None


def _parse_address(text: str, default_port: int | None = None) -> Address | None:
    text = text.strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)", text) or re.fullmatch(r"([^:\s\[\]]+):(\d+)", text)
    if m:
        port = int(m.group(2))
        return Address(m.group(1), port) if 0 <= port <= 65535 else None
    if default_port is not None and re.fullmatch(r"[^\s:\[\]]+|[0-9A-Fa-f:]+", text):
        return Address(text, default_port)
    return None


class _Validator:
    """Type checks that turn into ConfigErrors pointing at the right line."""

    def __init__(self, fname: str, text: str):
        self.fname = fname
        self.lines = text.splitlines()

    def line_of(self, dotted: str) -> int | None:
        parts = dotted.split(".")
        leaf = parts[-1]
        section = ".".join(parts[:-1])
        in_section = section == ""
        for i, line in enumerate(self.lines, 1):
            s = line.strip()
            if s.startswith("["):
                name = s.strip("[]").strip().strip('"')
                in_section = name == section
                if dotted == name:
                    return i
                continue
            if in_section and re.match(rf'^"?{re.escape(leaf)}"?\s*=', s):
                return i
        # an inline table or a key with dots in it (routes."a.example" = {port = …})
        for i, line in enumerate(self.lines, 1):
            if re.search(rf'(^|[\s{{,]){re.escape(leaf)}\s*=', line):
                return i
        return None

    def fail(self, dotted: str, expected: str, fix: str | None = None):
        raise ConfigError(self.fname, self.line_of(dotted), dotted, expected, fix=fix)

    def unknown_keys(self, table: dict, known: set[str], prefix: str) -> None:
        for k in table:
            if k not in known:
                dotted = f"{prefix}.{k}" if prefix else k
                self.fail(dotted, "unknown key", fix=f"remove it; known keys here: {', '.join(sorted(known))}")

    def table(self, raw: dict, name: str) -> dict:
        t = raw.get(name, {})
        if not isinstance(t, dict):
            self.fail(name, f"[{name}] must be a table")
        return t

    def get(self, t: dict, key: str, default, typ, expected: str, prefix: str):
        if key not in t:
            return default
        val = t[key]
        if not isinstance(val, typ) or (typ is int and isinstance(val, bool)):
            self.fail(f"{prefix}.{key}" if prefix else key, f"expected {expected}, got {val!r}")
        return val

    def string(self, t: dict, key: str, default: str, prefix: str) -> str:
        return self.get(t, key, default, str, "a string", prefix)

    def integer(self, t, key, default, prefix, minimum=None, maximum=None) -> int:
        val = self.get(t, key, default, int, "a whole number", prefix)
        if (minimum is not None and val < minimum) or (maximum is not None and val > maximum):
            rng = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            self.fail(f"{prefix}.{key}", f"expected a number {rng}, got {val}")
        return val

    def duration(self, t, key, default, prefix, minimum=0.0, maximum=_YEAR) -> float:
        if key not in t:
            return default
        d = parse_duration(t[key])
        if d is None or d < minimum or d > maximum:
            self.fail(f"{prefix}.{key}", f"expected a duration like \"30m\", \"4h\", \"5d\" or seconds"
                      f" between {minimum:g} s and {maximum:g} s, got {t[key]!r}")
        return d

    def address(self, t, key, default, prefix) -> Address | None:
        if key not in t:
            return default
        val = t[key]
        if val == "":
            return None
        a = _parse_address(val) if isinstance(val, str) else None
        if a is None:
            self.fail(f"{prefix}.{key}", f"expected \"host:port\" (or \"\" to disable), got {val!r}",
                      fix='write e.g. "127.0.0.1:2525"')
        return a
