"""Real third-party mail servers for tests: a throwaway Dovecot (IMAP + POP3) on loopback.

Why: the client must work against any standards-compliant provider, so its IMAP and POP3 tests
talk to the real Dovecot from the Debian package, never to a fake. Each instance lives in its own
temp dir (config, base_dir with its sockets, state_dir, logs, passwd-file, Maildirs) and listens
on free 127.0.0.1 ports; it is never a system service.

Usage (pytest)::

    from tests.peers import dovecot            # the fixture (import it into your test module)

    def test_something(dovecot):               # a running server, stopped after the test
        dovecot.add_user("bob", "secret")      # passwd-file user (uid/gid = current user)
        dovecot.seed("bob", 100)               # 100 messages written straight into INBOX
        imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
        ...
        dovecot.restart()                      # same ports, same mail (reconnect tests)

Without the fixture: ``with Dovecot(tmp_dir) as dc: ...`` or ``dc = Dovecot(d); dc.start();
...; dc.stop()``. Variants (constructor keywords):

- ``tls=True``: ssl = yes with a self-signed certificate for "localhost"/127.0.0.1 (``dc.cert_file``
  for clients to trust); adds ``imaps_port``/``pop3s_port`` and STARTTLS/STLS on the plain ports.
- ``special_use=False``: no SPECIAL-USE attributes on Sent/Drafts/Trash/Junk (tests of the
  common-name fallback); ``auto_folders=False``: those folders are not created automatically.
- ``idle_interval``: seconds between Dovecot's IDLE mailbox checks (tests want it short).

Seeding: ``seed(user, n, folder="INBOX", ...)`` writes Maildir files directly into ``cur/`` (no
doveadm, no SMTP), ~20 µs a message, so 100,000 messages take a few seconds;
``deliver(user, bytes, folder)`` drops one message into ``new/`` as a delivery agent would.
``make_message(i)`` builds the deterministic test message number ``i``. Folder ``"a/b"`` maps to
the Maildir++ directory ``.a.b``. Stopping kills the whole process group; nothing survives a test.
A missing /usr/sbin/dovecot makes the fixture ``pytest.skip``.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from email.utils import format_datetime
from pathlib import Path

import pytest

DOVECOT = os.environ.get("TUI_MAIL_DOVECOT", "/usr/sbin/dovecot")

#: The start of seeded messages' dates; message i is dated BASE_DATE + i minutes.
BASE_DATE = _dt.datetime(2026, 1, 1, 8, 0, tzinfo=_dt.timezone.utc)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mail_ids() -> tuple[int, int]:
    """uid/gid for mail processes: the current user, or nobody/nogroup when running as root."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    import pwd
    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return 65534, 65534


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM the server if the test process dies (Linux), so a
    killed pytest run (timeout, ^C twice) leaves no orphaned Dovecot behind."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _live_group_members(pgid: int) -> list[int]:
    """PIDs in process group ``pgid`` that are not zombies (Linux /proc; else killpg probe)."""
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except ProcessLookupError:
            return []
    live = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            live.append(int(entry))
    return live


def dovecot_available() -> bool:
    return os.access(DOVECOT, os.X_OK)


def make_message(i: int, *, subject: str | None = None, sender: str | None = None,
                 to: str = "Bob <bob@example.org>", body: str | None = None,
                 date: _dt.datetime | None = None, extra_headers: str = "") -> bytes:
    """Deterministic small RFC 5322 message number ``i`` (CRLF line ends)."""
    date = date or BASE_DATE + _dt.timedelta(minutes=i)
    sender = sender or f"Sender {i % 97} <sender{i % 97}@example.com>"
    subject = subject if subject is not None else f"Message {i} about topic {i % 13}"
    body = body if body is not None else f"Body of message {i}.\nword{i % 7} common text\n"
    head = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: {format_datetime(date)}\r\nMessage-ID: <msg{i}@example.com>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n{extra_headers}")
    return (head + "\r\n" + body.replace("\r\n", "\n").replace("\n", "\r\n")).encode("utf-8")


class Dovecot:
    """One throwaway Dovecot instance (see the module docstring)."""

    def __init__(self, root: str | os.PathLike | None = None, *, tls: bool = False,
                 special_use: bool = True, auto_folders: bool = True, idle_interval: int = 1,
                 pop3: bool = True):
        self._own_root = root is None
        # unix socket paths must stay short (108 bytes): base_dir gets its own short temp dir
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="dcr"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.base_dir = Path(tempfile.mkdtemp(prefix="dc", dir="/tmp"))
        os.chmod(self.base_dir, 0o755)
        self.state_dir = self.root / "state"
        # mail processes cannot run as root (Dovecot refuses uid 0), so as root they run as
        # "nobody" and the Maildirs live in their own world-traversable temp dir, chowned
        self.uid, self.gid = _mail_ids()
        self.mail_root = Path(tempfile.mkdtemp(prefix="dcm", dir="/tmp"))
        os.chmod(self.mail_root, 0o755)
        self._chown(self.mail_root)
        self.log_file = self.root / "dovecot.log"
        self.conf_file = self.root / "dovecot.conf"
        self.users_file = self.root / "users"
        self.state_dir.mkdir(exist_ok=True)
        self.users_file.touch()
        self.tls, self.special_use, self.auto_folders = tls, special_use, auto_folders
        self.idle_interval, self.pop3 = idle_interval, pop3
        self.host = "127.0.0.1"
        self.imap_port = _free_port()
        self.pop3_port = _free_port()
        self.imaps_port = _free_port() if tls else 0
        self.pop3s_port = _free_port() if tls else 0
        self.cert_file = self.key_file = None
        if tls:
            self.cert_file, self.key_file = self._make_cert()
        self.proc: subprocess.Popen | None = None
        self._seq = 0

    # --- config ----------------------------------------------------------------------
    def _make_cert(self) -> tuple[Path, Path]:
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
                .not_valid_before(now - _dt.timedelta(days=1))
                .not_valid_after(now + _dt.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                    critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        cf, kf = self.root / "cert.pem", self.root / "key.pem"
        cf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        kf.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        os.chmod(kf, 0o600)
        return cf, kf

    def _config(self) -> str:
        su = self.special_use
        auto = "create" if self.auto_folders else "no"

        def box(name: str, use: str) -> str:
            return (f'  mailbox "{name}" {{\n    auto = {auto}\n'
                    + (f"    special_use = {use}\n" if su else "") + "  }\n")

        if self.tls:
            ssl = (f"ssl = yes\nssl_cert = <{self.cert_file}\nssl_key = <{self.key_file}\n"
                   "ssl_min_protocol = TLSv1.2\n")
        else:
            ssl = "ssl = no\n"
        protocols = "imap pop3" if self.pop3 else "imap"
        boxes = "".join(box(n, "\\" + n) for n in ("Sent", "Drafts", "Trash", "Junk"))
        return f"""\
# generated by tests/peers.py
base_dir = {self.base_dir}
state_dir = {self.state_dir}
instance_name = tuimail-test-{self.imap_port}
log_path = {self.log_file}
info_log_path = {self.log_file}
protocols = {protocols}
listen = 127.0.0.1
{ssl}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
first_valid_uid = 0
first_valid_gid = 0
mail_uid = {self.uid}
mail_gid = {self.gid}
mail_location = maildir:{self.mail_root}/%u/Maildir
mail_fsync = never
maildir_very_dirty_syncs = no
imap_idle_notify_interval = {self.idle_interval} secs
mailbox_idle_check_interval = {self.idle_interval} secs
login_trusted_networks =
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.users_file}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.users_file}
  default_fields = uid={self.uid} gid={self.gid} home={self.mail_root}/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
{boxes}}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {self.pop3s_port}
  }}
}}
service imap {{
  process_limit = 64
}}
service anvil {{
  chroot =
}}
service auth {{
  user = root
}}
service auth-worker {{
  user = root
}}
"""

    # --- users and mail --------------------------------------------------------------
    def _chown(self, path: Path) -> None:
        if os.getuid() == 0:
            os.chown(path, self.uid, self.gid)

    def _mkdirs(self, path: Path) -> None:
        missing = []
        p = path
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir()
            self._chown(d)

    def add_user(self, name: str, password: str) -> Path:
        """Add a passwd-file user (Dovecot rereads the file on change); returns its Maildir."""
        if ":" in name or ":" in password or "\n" in name + password:
            raise ValueError("user names and passwords must not contain ':' or newlines")
        with self.users_file.open("a") as f:
            # uid/gid come from userdb default_fields (passwd-file itself refuses uid 0)
            f.write(f"{name}:{{PLAIN}}{password}:::::\n")
        # passwd-file notices changes by mtime; make sure a same-second edit is seen
        st = self.users_file.stat()
        os.utime(self.users_file, (st.st_atime, st.st_mtime + 1 + self._seq))
        self._seq += 1
        return self._ensure_folder(name, "INBOX")

    def maildir(self, user: str, folder: str = "INBOX") -> Path:
        """The Maildir++ directory of ``folder`` ("INBOX", "Sent", "a/b" → .a.b)."""
        base = self.mail_root / user / "Maildir"
        if folder.upper() == "INBOX":
            return base
        return base / ("." + folder.replace("/", "."))

    def _ensure_folder(self, user: str, folder: str) -> Path:
        md = self.maildir(user, folder)
        for sub in ("cur", "new", "tmp"):
            self._mkdirs(md / sub)
        if folder.upper() != "INBOX" and not (md / "maildirfolder").exists():
            (md / "maildirfolder").touch()
            self._chown(md / "maildirfolder")
        return md

    def seed(self, user: str, n: int, folder: str = "INBOX", *, start: int = 0,
             seen_every: int = 0, make=make_message) -> int:
        """Write ``n`` messages (numbers start..start+n-1) into ``folder``'s cur/ directly.

        File names sort in message order, so Dovecot assigns UIDs in that order on its next
        sync. ``seen_every=k`` marks every k-th message \\Seen. Returns the number written."""
        md = self._ensure_folder(user, folder)
        cur = md / "cur"
        stamp = int(time.time())
        chown = os.getuid() == 0
        for i in range(start, start + n):
            data = make(i)
            flags = "S" if seen_every and i % seen_every == 0 else ""
            path = cur / f"{stamp}.M{i:08d}P{os.getpid()}.seed,S={len(data)}:2,{flags}"
            with open(path, "wb") as f:
                f.write(data)
                if chown:
                    os.fchown(f.fileno(), self.uid, self.gid)
            ts = (BASE_DATE + _dt.timedelta(minutes=i)).timestamp()
            os.utime(path, (ts, ts))
        return n

    def deliver(self, user: str, data: bytes, folder: str = "INBOX") -> Path:
        """Deliver one message as an MDA would: write to tmp/, rename into new/."""
        md = self._ensure_folder(user, folder)
        self._seq += 1
        name = f"{time.time_ns()}.D{self._seq}P{os.getpid()}.deliver,S={len(data)}"
        tmp = md / "tmp" / name
        tmp.write_bytes(data)
        self._chown(tmp)
        dest = md / "new" / name
        os.rename(tmp, dest)
        return dest

    # --- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> "Dovecot":
        if not dovecot_available():
            raise FileNotFoundError(DOVECOT)
        self.conf_file.write_text(self._config())
        with open(self.root / "dovecot.stderr", "ab") as err:
            self.proc = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(self.conf_file)], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, close_fds=True,
                preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                msg = self.log_text()[-3000:]
                self.proc = None
                raise RuntimeError(f"dovecot exited at start:\n{msg}")
            if self._banner_ok():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dovecot did not answer within {timeout}s:\n{self.log_text()[-3000:]}")
            time.sleep(0.02)

    def _banner_ok(self) -> bool:
        try:
            with socket.create_connection((self.host, self.imap_port), timeout=1) as s:
                return s.recv(200).startswith(b"* OK")
        except OSError:
            return False

    def stop(self, grace: float = 0.3) -> None:
        """Stop the master and every child (the whole process group); idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:  # the master shuts its children down on TERM; it may dawdle, so not for long
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:  # children that outlived the master (or a master still shutting down)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        # killed children may stay zombies until init reaps them; wait only for live ones
        deadline = time.monotonic() + 3
        while _live_group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart(self) -> None:
        """Stop and start again on the same ports with the same users and mail."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        shutil.rmtree(self.mail_root, ignore_errors=True)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        parts = []
        for p in (self.log_file, self.root / "dovecot.stderr"):
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "\n".join(parts)

    def __enter__(self) -> "Dovecot":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


def _launch(tmp_path, **kw) -> Dovecot:
    if not dovecot_available():
        pytest.skip(f"dovecot not installed ({DOVECOT})")
    return Dovecot(tmp_path / "dovecot", **kw).start()


@pytest.fixture
def dovecot(tmp_path):
    """A running plaintext Dovecot (IMAP + POP3), SPECIAL-USE folders; stopped after the test."""
    dc = _launch(tmp_path)
    try:
        yield dc
    finally:
        dc.cleanup()


@pytest.fixture
def dovecot_tls(tmp_path):
    """Like ``dovecot`` with ssl = yes: imaps_port/pop3s_port, STARTTLS/STLS, ``cert_file``."""
    dc = _launch(tmp_path, tls=True)
    try:
        yield dc
    finally:
        dc.cleanup()


@pytest.fixture
def dovecot_plain_names(tmp_path):
    """Dovecot without SPECIAL-USE and without auto-created folders (name-fallback tests)."""
    dc = _launch(tmp_path, special_use=False, auto_folders=False)
    try:
        yield dc
    finally:
        dc.cleanup()
