"""SMTP peers for the client's sending tests.

- ``Postfix``: a throwaway Postfix (the Debian package) configured under a temp dir: its own
  config_directory, queue_directory and data_directory, smtpd on a free 127.0.0.1 port,
  ``inet_interfaces = loopback-only``, no DNS (every domain is local), and local delivery into
  Maildirs under the temp dir, so a test can read what was submitted. Started with
  ``postfix -c <dir> start``, stopped with ``postfix -c <dir> stop`` and, should that fail, by
  killing the master's process group. A missing /usr/sbin/postfix makes the fixture skip.
- ``SmtpSink``: an aiosmtpd server in the test's own event loop (port 0, no threads) for what
  Postfix cannot be asked to do on cue: AUTH with a chosen password, STARTTLS or implicit TLS
  with a self-signed certificate, and scripted 4xx/5xx replies.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import email
import email.policy
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP as AioSMTP
from aiosmtpd.smtp import AuthResult, LoginPassword

POSTFIX = os.environ.get("TUI_MAIL_POSTFIX", "/usr/sbin/postfix")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost/127.0.0.1: (cert.pem, key.pem)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(days=1)).not_valid_after(now + _dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cf, kf = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kf.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    os.chmod(kf, 0o600)
    return cf, kf


# --- aiosmtpd sink ---------------------------------------------------------------------------
@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self):
        return email.message_from_bytes(self.data, policy=email.policy.default)


@dataclass
class SmtpSink:
    """An aiosmtpd server on 127.0.0.1:0 in the running loop. Set ``rcpt_reply`` or
    ``data_reply`` (e.g. "550 5.1.1 no such user") to script failures."""

    users: dict[str, str] = field(default_factory=dict)
    tls: str = "none"                  # none | starttls | tls
    cert_dir: Path | None = None
    received: list[Received] = field(default_factory=list)
    rcpt_reply: str | None = None
    data_reply: str | None = None
    auth_attempts: list[str] = field(default_factory=list)
    port: int = 0                      # 0: any free port; else this one (server "back up")
    cafile: str | None = None
    data_delay: float = 0.0            # seconds to sit on the end of DATA before answering
    data_started: int = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.data_started += 1
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.data_reply:
            return self.data_reply
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 Ok: queued as SINK%d" % len(self.received)

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode()
            self.auth_attempts.append(user)
            ok = self.users.get(user) == auth_data.password.decode()
            return AuthResult(success=ok, handled=False)
        return AuthResult(success=False, handled=False)

    async def start(self) -> "SmtpSink":
        loop = asyncio.get_running_loop()
        ctx = None
        if self.tls != "none":
            assert self.cert_dir is not None, "TLS needs cert_dir"
            cf, kf = make_cert(self.cert_dir)
            self.cafile = str(cf)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cf, kf)

        def factory():
            with warnings.catch_warnings():
                # implicit TLS: aiosmtpd cannot see the transport is already encrypted and warns
                # that AUTH does not require (STARTTLS) TLS
                warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)
                return AioSMTP(self, hostname="sink.test", loop=loop, enable_SMTPUTF8=True,
                               decode_data=False,
                               tls_context=ctx if self.tls == "starttls" else None,
                               authenticator=self._authenticate if self.users else None,
                               auth_require_tls=self.tls == "starttls", auth_required=bool(self.users))

        self._server = await loop.create_server(factory, "127.0.0.1", self.port,
                                                ssl=ctx if self.tls == "tls" else None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._server.close()
        if hasattr(self._server, "close_clients"):
            self._server.close_clients()
        await self._server.wait_closed()

    async def __aenter__(self) -> "SmtpSink":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()


# --- Postfix --------------------------------------------------------------------------------
def postfix_available() -> bool:
    return os.access(POSTFIX, os.X_OK)


class Postfix:
    """One throwaway Postfix instance under ``root`` (see the module docstring)."""

    def __init__(self, domain: str = "example.org", users: tuple[str, ...] = ("alice", "bob", "carol"),
                 mail_root: str | os.PathLike | None = None, port: int | None = None):
        # Postfix's daemons run as "postfix" and "nobody": the whole tree lives in its own
        # world-traversable temp dir (pytest's tmp_path is private to root)
        self.root = Path(tempfile.mkdtemp(prefix="pf", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.domain = domain
        self.users = users
        self.conf_dir = self.root / "etc"
        self.queue_dir = self.root / "spool"
        self.data_dir = self.root / "data"
        # deliveries run as "nobody" when we are root; Maildirs must be theirs
        # mail_root: deliver into another server's tree (e.g. a Dovecot's, user/Maildir layout)
        self._own_mail_root = mail_root is None
        self.mail_root = Path(mail_root) if mail_root else Path(tempfile.mkdtemp(prefix="pfm", dir="/tmp"))
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.started = False

    def _owner(self) -> tuple[str, int, int]:
        if os.getuid() == 0:
            pw = pwd.getpwnam("postfix")
            return "postfix", pw.pw_uid, pw.pw_gid
        pw = pwd.getpwuid(os.getuid())
        return pw.pw_name, pw.pw_uid, pw.pw_gid

    def maildir(self, user: str) -> Path:
        return self.mail_root / user / "Maildir"

    def messages(self, user: str) -> list[bytes]:
        md = self.maildir(user)
        out = []
        for sub in ("new", "cur"):
            d = md / sub
            if d.is_dir():
                out.extend((d / n).read_bytes() for n in sorted(os.listdir(d)))
        return out

    def wait_for(self, user: str, count: int, timeout: float = 10.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.messages(user)
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def _config(self) -> str:
        owner, _, _ = self._owner()
        return f"""\
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
mail_owner = {owner}
myhostname = mx.{self.domain}
mydomain = {self.domain}
myorigin = {self.domain}
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtp_dns_support_level = disabled
disable_dns_lookups = yes
smtpd_banner = $myhostname ESMTP
maillog_file = {self.root}/maillog
maillog_file_prefixes = {self.root}
biff = no
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = static:all
virtual_mailbox_base = {self.mail_root}
virtual_mailbox_maps = texthash:{self.conf_dir}/vmailbox
virtual_uid_maps = static:{self._vuid()}
virtual_gid_maps = static:{self._vgid()}
virtual_minimum_uid = 1
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
unknown_local_recipient_reject_code = 550
shlib_directory = /usr/lib/postfix
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
command_directory = /usr/sbin
setgid_group = postdrop
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C
"""

    def _vuid(self) -> int:
        return self._owner()[1] if os.getuid() != 0 else pwd.getpwnam("nobody").pw_uid

    def _vgid(self) -> int:
        return self._owner()[2] if os.getuid() != 0 else pwd.getpwnam("nobody").pw_gid

    def _master_cf(self) -> str:
        src = Path("/etc/postfix/master.cf").read_text()
        out = []
        for line in src.splitlines():
            cols = line.split()
            if len(cols) >= 8 and not line.startswith((" ", "#")) and cols[4] == "y":
                cols[4] = "n"  # no chroot: the temp tree has no copy of /etc inside it
                line = "  ".join(cols[:8]) + ("  " + " ".join(cols[8:]) if cols[8:] else "")
            if line.startswith("smtp ") and " inet " in line:
                line = f"127.0.0.1:{self.port}      inet  n       -       n       -       -       smtpd"
            elif line.startswith(("submission", "smtps")) and " inet " in line:
                continue
            out.append(line)
        return "\n".join(out) + "\n"

    def start(self, timeout: float = 15.0) -> "Postfix":
        if not postfix_available():
            raise FileNotFoundError(POSTFIX)
        for d in (self.conf_dir, self.queue_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        _, uid, gid = self._owner()
        os.chown(self.data_dir, uid, gid)
        vu, vg = self._vuid(), self._vgid()
        if self._own_mail_root:
            os.chmod(self.mail_root, 0o755)
            os.chown(self.mail_root, vu, vg)
        (self.conf_dir / "main.cf").write_text(self._config())
        (self.conf_dir / "master.cf").write_text(self._master_cf())
        # one Maildir per known user; anything else @domain lands in "catchall"
        (self.conf_dir / "vmailbox").write_text(
            "".join(f"{u}@{self.domain} {u}/Maildir/\n" for u in self.users)
            + f"@{self.domain} catchall/Maildir/\n")
        env = {**os.environ, "MAIL_CONFIG": str(self.conf_dir)}
        r = subprocess.run([POSTFIX, "-c", str(self.conf_dir), "start"], env=env,
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"postfix start failed: {r.stdout}{r.stderr}{self.log_text()[-2000:]}")
        self.started = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(200).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postfix did not answer on {self.port}:\n{self.log_text()[-2000:]}")

    def _master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        pid = self._master_pid()
        env = {**os.environ, "MAIL_CONFIG": str(self.conf_dir)}
        try:
            subprocess.run([POSTFIX, "-c", str(self.conf_dir), "abort"], env=env,
                           capture_output=True, timeout=20)
        except subprocess.TimeoutExpired:
            pass
        if pid:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                try:
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def cleanup(self) -> None:
        self.stop()
        if self._own_mail_root:
            shutil.rmtree(self.mail_root, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        p = self.root / "maillog"
        return p.read_text(errors="replace") if p.exists() else ""


@pytest.fixture(scope="module")
def postfix():
    """A running Postfix accepting mail for any address on 127.0.0.1, delivering to Maildirs."""
    if not postfix_available():
        pytest.skip(f"postfix not installed ({POSTFIX})")
    pf = Postfix()
    try:
        pf.start()
    except (RuntimeError, OSError, KeyError) as e:
        pf.cleanup()
        pytest.skip(f"postfix cannot run in this sandbox: {e}")
    try:
        yield pf
    finally:
        pf.cleanup()
