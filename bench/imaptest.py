"""Dovecot's imaptest against the relay's IMAP server, side by side with Dovecot itself.

    .venv/bin/python bench/imaptest.py --imaptest /work/imaptest/src/imaptest
    IMAPTEST=/work/imaptest/src/imaptest .venv/bin/python bench/imaptest.py fetch-body search-header
    .venv/bin/python bench/imaptest.py --imaptest PATH --no-stress        # scripted files only
    .venv/bin/python bench/imaptest.py --imaptest PATH --no-scripted --stress-runs 3
    .venv/bin/python bench/imaptest.py --imaptest PATH -k sort -v         # files matching "sort",
                                                                           # imaptest's output shown
    .venv/bin/python bench/imaptest.py --imaptest PATH --no-scripted --cheap-login \
        --stress-args "search=30 sort=20 thread=20 uidfetch=30 copy=30 noop=20 check=10"
    .venv/bin/python bench/imaptest.py --imaptest PATH --workers 1 2   # + `relay start`, 2 workers

What it runs:

- every scripted test file in imaptest's ``tests/`` directory (next to the binary unless
  ``--tests DIR``), one file at a time (``test=FILE``; a ``FILE.mbox`` beside it is picked up
  by imaptest), each with a fresh throw-away user, so one file's leftovers never affect the next;
  positional names or ``-k SUBSTRING`` pick a subset;
- a stress run: ``mbox=… secs=20 clients=10`` (imaptest's default profile) over an mbox this
  script writes, whose messages all have unique Message-IDs (imaptest needs that to track them);
- the same against Dovecot on the same machine when /usr/sbin/dovecot is installed (started
  the way tests/peers.py starts it: its own temp dir, free loopback ports, never a service).

The relay runs in this process: a :class:`relay.server.RelayServer` built from the same
``relay.toml`` text a user writes (``parse_config``), with IMAP on a free 127.0.0.1 port, in its
own thread and event loop, so every listener, the store, the user database (scrypt) and the
throttle are the ones ``tui-mail relay start`` runs; only the daemonising is skipped. The main
thread only waits for imaptest (a subprocess), so it does not compete with the relay for the GIL.

imaptest deletes mail, which is why it only ever sees throw-away users in temp dirs.

``--stress-args`` passes more imaptest settings (command probabilities) to the stress run;
``--cheap-login`` gives the relay's bench users a cheap scrypt (see ``cheap_login_hashes``).

Output: one table (file | relay | Dovecot) with passed / FAILED / skipped per file, the totals
(files passed/failed/skipped, individual commands failed for the base protocol and for
extensions), then the stress figures: errors (imaptest's ``Error:`` lines) and commands per
second (the sum of imaptest's Totals row over ``secs``). Without an imaptest binary it prints
how to get one and exits 0 (CI cannot build imaptest).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PASSWORD = "imaptest-secret"


# ------------------------------------------------------------------------------ the servers
class RelayUnderTest:
    """A RelayServer with IMAP on a free loopback port, in its own thread."""

    def __init__(self, root: Path) -> None:
        from relay.config import parse_config
        from relay.server import RelayServer

        text = ('hostname = "mx.example.org"\ndomains = ["example.org"]\n'
                '[listen]\nsmtp = "127.0.0.1:0"\nsubmission = ""\nimap = "127.0.0.1:0"\npop3 = ""\n')
        self.server = RelayServer(parse_config(text, None, root), grace=2.0)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="relay", daemon=True)
        self._n = 0

    def start(self, users: int = 1) -> "RelayUnderTest":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        self.host, self.port = self.server.addresses["imap"]
        return self

    def new_user(self) -> str:
        self._n += 1
        user = f"imaptest{self._n}@example.org"
        self.server.users.add(user, PASSWORD)
        return user

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class RelayProcessesUnderTest:
    """``tui-mail relay start --foreground`` with ``[process] workers = N`` (issue 14): the
    master and N worker processes exactly as a user runs them; imaptest's connections are
    spread over the workers by the kernel, so sessions of one user meet across processes."""

    def __init__(self, root: Path, workers: int) -> None:
        self.root, self.workers = root, workers
        self.proc: subprocess.Popen | None = None
        self._n = 0

    def start(self, users: int = 1) -> "RelayProcessesUnderTest":
        import json
        import time

        from relay.users import UserDB

        self.root.mkdir(parents=True, exist_ok=True)
        cfg = self.root / "relay.toml"
        cfg.write_text('hostname = "mx.example.org"\ndomains = ["example.org"]\n'
                       '[listen]\nsmtp = "127.0.0.1:0"\nsubmission = ""\nimap = "127.0.0.1:0"\npop3 = ""\n'
                       f'[process]\nworkers = {self.workers}\n')
        data = self.root / "data"
        self.users = UserDB(data / "users")       # the relay re-reads it: users added later work
        self.proc = subprocess.Popen([sys.executable, "-m", "relay", "start", "--foreground", "--quiet-stderr",
                                      "--config", str(cfg), "--data-dir", str(data)],
                                     cwd=Path(__file__).resolve().parent.parent,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                st = json.loads((data / "relay.state.json").read_text())
                if st["pid"] == self.proc.pid and len(st.get("workers", [])) == self.workers:
                    self.host, self.port = st["listeners"]["imap"]
                    return self
            except (OSError, ValueError, KeyError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("relay start failed")
            time.sleep(0.05)
        raise RuntimeError("the relay's workers did not come up")

    def new_user(self) -> str:
        self._n += 1
        user = f"imaptest{self._n}@example.org"
        self.users.add(user, PASSWORD)
        return user

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def cheap_login_hashes() -> None:
    """``--cheap-login``: new relay users get scrypt N=16 instead of 2**14, so a LOGIN costs
    microseconds, as Dovecot's {PLAIN} bench user does. imaptest's stress profile logs in and
    out all the time, and on a busy 2-core machine the deliberate scrypt cost (~0.1–0.2 s of CPU
    per LOGIN) otherwise dominates the commands/s figure. Bench only; the relay never does this."""
    import functools

    import relay.users

    relay.users.hash_password = functools.partial(relay.users.hash_password, n=16)


class DovecotUnderTest:
    def __init__(self, root: Path) -> None:
        from tests.peers import Dovecot

        self.dc = Dovecot(root)
        self._n = 0

    def start(self, users: int = 1) -> "DovecotUnderTest":
        # all users up front: Dovecot's passwd-file cache may miss a same-second change
        for i in range(1, users + 1):
            self.dc.add_user(f"imaptest{i}", PASSWORD)
        self.dc.start()
        self.host, self.port = self.dc.host, self.dc.imap_port
        return self

    def new_user(self) -> str:
        self._n += 1
        return f"imaptest{self._n}"

    def stop(self) -> None:
        self.dc.cleanup()


# ------------------------------------------------------------------------------ imaptest runs
@dataclass
class ScriptResult:
    status: str                 # passed | FAILED | skipped | ERROR (no summary: crash, timeout)
    base: tuple[int, int] = (0, 0)   # individual commands (failed, total)
    ext: tuple[int, int] = (0, 0)
    output: str = ""

    def cell(self) -> str:
        return self.status


_GROUPS = re.compile(r"(\d+) test groups: (\d+) failed, (\d+) skipped")
_CMDS = re.compile(r"(base protocol|extensions): (\d+)/(\d+) individual commands failed")


def run_script(imaptest: str, server, test: Path, timeout: float) -> ScriptResult:
    user = server.new_user()
    cmd = [imaptest, f"host={server.host}", f"port={server.port}", f"user={user}",
           f"pass={PASSWORD}", f"test={test}"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or "") if isinstance(e.stdout, str) else ""
        return ScriptResult("ERROR", output=out + f"\n(timed out after {timeout:.0f} s)")
    out = r.stdout + r.stderr
    m = _GROUPS.search(out)
    res = ScriptResult("ERROR", output=out)
    for which, failed, total in _CMDS.findall(out):
        if which == "base protocol":
            res.base = (int(failed), int(total))
        else:
            res.ext = (int(failed), int(total))
    if m:
        _, failed, skipped = (int(x) for x in m.groups())
        # imaptest never counts a file skipped for a missing capability when run one file at
        # a time (it logs out before its counter is reached): no command run means skipped
        ran = res.base[1] + res.ext[1]
        res.status = "FAILED" if failed else ("skipped" if skipped or not ran else "passed")
    return res


@dataclass
class StressResult:
    errors: int
    commands: int
    secs: int
    sample: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def per_second(self) -> float:
        return self.commands / self.secs if self.secs else 0.0


def run_stress(imaptest: str, server, mbox: Path, secs: int, clients: int,
               extra: list[str] = ()) -> StressResult:
    user = server.new_user()
    cmd = [imaptest, f"host={server.host}", f"port={server.port}", f"user={user}",
           f"pass={PASSWORD}", f"mbox={mbox}", f"secs={secs}", f"clients={clients}", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=secs + 120)
    out = r.stdout + "\n" + r.stderr
    errors = [ln for ln in out.splitlines() if ln.startswith(("Error:", "Panic:", "Fatal:"))]
    commands = 0
    tail = out.split("Totals:", 1)
    if len(tail) == 2:
        rows = [ln for ln in tail[1].splitlines() if ln.strip()]
        nums = [ln for ln in rows if re.fullmatch(r"[\d\s]+", ln)]
        if nums:
            commands = sum(int(x) for x in nums[0].split())
    return StressResult(len(errors), commands, secs, errors[:8], out)


def write_mbox(path: Path, n: int = 200) -> None:
    """``n`` messages of a few shapes (plain, multipart with an attachment, a reply), each
    with its own Message-ID."""
    with open(path, "w", newline="\n") as f:
        for i in range(n):
            date = f"Mon, {1 + i % 28:02d} Dec 2025 {i % 24:02d}:{i % 60:02d}:00 +0000"
            f.write(f"From sender{i % 17}@example.org Mon Dec  1 00:00:00 2025\n")
            head = (f"From: Sender {i % 17} <sender{i % 17}@example.org>\n"
                    f"To: Bob <bob@example.org>, carol@example.org\n"
                    f"Subject: stress message {i} about topic {i % 11}\n"
                    f"Message-ID: <{i}.imaptest-stress@example.org>\nDate: {date}\n")
            if i % 5 == 1:
                head += f"In-Reply-To: <{i - 1}.imaptest-stress@example.org>\n"
            if i % 4 == 2:
                f.write(head + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b{0}"\n\n'
                        "--b{0}\nContent-Type: text/plain; charset=utf-8\n\nhello {0}\nsecond line\n"
                        "--b{0}\nContent-Type: application/octet-stream; name=\"a{0}.bin\"\n"
                        "Content-Transfer-Encoding: base64\n\naGVsbG8gd29ybGQ=\n--b{0}--\n\n".format(i))
            else:
                body = "".join(f"line {j} of message {i}\n" for j in range(1 + i % 9))
                f.write(head + "\n" + body + "\n")


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="scripted test files to run (default: all)")
    ap.add_argument("--imaptest", default=os.environ.get("IMAPTEST"),
                    help="the imaptest binary (default $IMAPTEST)")
    ap.add_argument("--tests", type=Path, help="imaptest's tests/ directory (default: next to the binary)")
    ap.add_argument("-k", dest="match", help="only scripted files whose name contains this")
    ap.add_argument("--no-scripted", action="store_true", help="skip the scripted files")
    ap.add_argument("--no-stress", action="store_true", help="skip the stress run")
    ap.add_argument("--no-dovecot", action="store_true", help="relay only")
    ap.add_argument("--secs", type=int, default=20, help="stress duration (default 20)")
    ap.add_argument("--clients", type=int, default=10, help="stress clients (default 10)")
    ap.add_argument("--stress-runs", type=int, default=1, help="stress runs per server (default 1)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds per scripted file")
    ap.add_argument("--stress-args", default="",
                    help='more imaptest settings for the stress run, e.g. "search=30 sort=20 copy=30"')
    ap.add_argument("--cheap-login", action="store_true",
                    help="relay users with scrypt N=16 (LOGIN as cheap as Dovecot's PLAIN bench user)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1], metavar="N",
                    help="relay worker processes, one column each (1 = the relay in this process, "
                         "N > 1 = `relay start` with [process] workers = N); default 1")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print imaptest's output for files that did not pass, and stress errors")
    args = ap.parse_args(argv)

    if not args.imaptest:
        print("imaptest: no binary given (--imaptest PATH or $IMAPTEST); skipping.\n"
              "Build it from dovecot/imaptest (see issue 11 / README 'IMAP conformance').")
        return 0
    imaptest = shutil.which(args.imaptest) or args.imaptest
    if not os.access(imaptest, os.X_OK):
        print(f"imaptest: {imaptest} is not an executable file; skipping.")
        return 0
    tests_dir = args.tests or Path(imaptest).resolve().parent / "tests"
    files: list[Path] = []
    if not args.no_scripted:
        names = args.files or sorted(p.name for p in tests_dir.iterdir()
                                     if p.is_file() and not p.name.endswith(".mbox"))
        if args.match:
            names = [n for n in names if args.match in n]
        files = [tests_dir / n for n in names]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            ap.error("no such test file: " + ", ".join(missing))

    from tests.peers import dovecot_available

    if args.cheap_login:
        cheap_login_hashes()

    work = Path(tempfile.mkdtemp(prefix="imaptest-bench-"))
    mbox = work / "stress.mbox"
    write_mbox(mbox)
    targets: list[tuple[str, object]] = [
        ("relay", RelayUnderTest(work / "relay")) if n == 1 else
        (f"relay w={n}", RelayProcessesUnderTest(work / f"relay-w{n}", n)) for n in args.workers]
    if not args.no_dovecot:
        if dovecot_available():
            targets.append(("Dovecot", DovecotUnderTest(work / "dovecot")))
        else:
            print("Dovecot is not installed: relay figures only.")
    scripted: dict[str, dict[str, ScriptResult]] = {}
    stress: dict[str, list[StressResult]] = {}
    try:
        for label, srv in targets:
            srv.start(users=len(files) + args.stress_runs + 1)
            try:
                for p in files:
                    res = run_script(imaptest, srv, p, args.timeout)
                    scripted.setdefault(p.name, {})[label] = res
                    print(f"  {label:8} {p.name:40} {res.status}", file=sys.stderr, flush=True)
                    if args.verbose and res.status in ("FAILED", "ERROR"):
                        print(res.output, file=sys.stderr)
                if not args.no_stress:
                    for _ in range(args.stress_runs):
                        st = run_stress(imaptest, srv, mbox, args.secs, args.clients,
                                        args.stress_args.split())
                        stress.setdefault(label, []).append(st)
                        print(f"  {label:8} stress: {st.errors} errors, {st.per_second:.0f} commands/s",
                              file=sys.stderr, flush=True)
                        if args.verbose:
                            for ln in st.sample:
                                print("    " + ln, file=sys.stderr)
            finally:
                srv.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    labels = [label for label, _ in targets]
    if files:
        w = max(len(p.name) for p in files) + 2
        print(f"| {'file':{w}} | " + " | ".join(f"{x:9}" for x in labels) + " |")
        print(f"|{'-' * (w + 2)}|" + "|".join("-" * 11 for _ in labels) + "|")
        for p in files:
            row = scripted[p.name]
            cells = []
            for x in labels:
                st = row[x].status
                cells.append(f"{('**' + st + '**') if st in ('FAILED', 'ERROR') else st:9}")
            print(f"| {p.name:{w}} | " + " | ".join(cells) + " |")
        print()
        print("| totals | " + " | ".join(labels) + " |")
        print("|---|" + "---|" * len(labels))
        summary, base, ext = [], [], []
        for x in labels:
            rs = [scripted[p.name][x] for p in files]
            c = {s: sum(1 for r in rs if r.status == s) for s in ("passed", "FAILED", "skipped", "ERROR")}
            txt = f"{c['passed']} passed, {c['FAILED']} failed, {c['skipped']} skipped"
            if c["ERROR"]:
                txt += f", {c['ERROR']} errors"
            summary.append(txt)
            bf, bt = sum(r.base[0] for r in rs), sum(r.base[1] for r in rs)
            ef, et = sum(r.ext[0] for r in rs), sum(r.ext[1] for r in rs)
            base.append(f"{bt - bf}/{bt}")
            ext.append(f"{et - ef}/{et}")
        print(f"| scripted files ({len(files)}) | " + " | ".join(summary) + " |")
        print("| commands passed, base protocol | " + " | ".join(base) + " |")
        print("| commands passed, extensions | " + " | ".join(ext) + " |")
    if stress:
        if not files:
            print("| totals | " + " | ".join(labels) + " |")
            print("|---|" + "---|" * len(labels))
        cells = []
        for x in labels:
            runs = stress.get(x, [])
            cells.append("; ".join(f"{s.errors} errors, {s.per_second:.0f} cmd/s" for s in runs))
        print(f"| stress secs={args.secs} clients={args.clients} {args.stress_args}".rstrip()
              + " | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
