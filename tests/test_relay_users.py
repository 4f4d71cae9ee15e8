"""UserDB (scrypt hashes in one 0600 file) and the per-IP AuthThrottle."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from relay.users import AuthThrottle, UserDB, UserError, hash_password, verify_password


def test_add_authenticate_passwd_remove(tmp_path):
    db = UserDB(tmp_path / "users")
    db.add("Bob@Example.org", "hunter2")
    assert db.exists("bob@example.org") and db.exists("BOB@EXAMPLE.ORG")
    assert db.authenticate("bob@example.org", "hunter2")
    assert not db.authenticate("bob@example.org", "hunter3")
    assert not db.authenticate("nobody@example.org", "hunter2")
    db.set_password("bob@example.org", "correct horse")
    assert db.authenticate("BOB@example.org", "correct horse") and not db.authenticate("bob@example.org", "hunter2")
    db.add("alice@example.org", "pw")
    assert db.list() == ["alice@example.org", "bob@example.org"]
    db.remove("bob@example.org")
    assert db.list() == ["alice@example.org"] and not db.authenticate("bob@example.org", "correct horse")


def test_file_is_private_hashed_and_shared_between_instances(tmp_path):
    path = tmp_path / "data" / "users"
    a, b = UserDB(path), UserDB(path)
    a.add("bob@example.org", "s3cret-password")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    text = path.read_text()
    assert "s3cret-password" not in text and text.startswith("bob@example.org\tscrypt$16384$8$1$")
    assert b.authenticate("bob@example.org", "s3cret-password")  # another process's view reloads
    a.remove("bob@example.org")
    assert not b.exists("bob@example.org")
    assert [n for n in os.listdir(path.parent) if n.endswith(".tmp")] == []


def test_errors_name_the_problem(tmp_path):
    db = UserDB(tmp_path / "users")
    with pytest.raises(UserError, match="not a mail address"):
        db.add("bob", "pw")
    with pytest.raises(UserError, match="must not be empty"):
        db.add("bob@example.org", "")
    db.add("bob@example.org", "pw")
    with pytest.raises(UserError, match="exists already"):
        db.add("BOB@example.org", "pw2")
    with pytest.raises(UserError, match="no such user"):
        db.remove("carol@example.org")
    with pytest.raises(UserError, match="no such user"):
        db.set_password("carol@example.org", "x")


def test_hash_format_and_malformed_hashes():
    h = hash_password("pässwörd", n=1024)
    assert verify_password("pässwörd", h) and not verify_password("passwort", h)
    assert hash_password("x", n=1024) != hash_password("x", n=1024)  # salted
    for bad in ("", "plain$x", "scrypt$a$b$c$d$e", "md5$1$1$1$AA==$AA=="):
        assert not verify_password("x", bad)


def test_authentication_is_not_faster_for_unknown_users(tmp_path):
    db = UserDB(tmp_path / "users")
    db.add("bob@example.org", "pw")
    db.authenticate("ghost@example.org", "x")  # make the dummy hash
    t0 = time.perf_counter()
    db.authenticate("bob@example.org", "wrong")
    known = time.perf_counter() - t0
    t0 = time.perf_counter()
    db.authenticate("ghost@example.org", "wrong")
    unknown = time.perf_counter() - t0
    assert unknown > known / 3  # both pay for one scrypt


def test_throttle_grows_caps_resets_and_forgets():
    now = [0.0]
    t = AuthThrottle(base=0.5, maximum=4.0, forget_after=100.0, clock=lambda: now[0])
    assert t.delay("10.0.0.1") == 0.0
    delays = []
    for _ in range(6):
        t.failed("10.0.0.1")
        delays.append(t.delay("10.0.0.1"))
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert t.delay("10.0.0.2") == 0.0  # per IP
    t.succeeded("10.0.0.1")
    assert t.delay("10.0.0.1") == 0.0
    t.failed("10.0.0.3")
    now[0] = 101.0
    assert t.delay("10.0.0.3") == 0.0


async def test_throttle_before_attempt_sleeps():
    t = AuthThrottle(base=0.1, maximum=1.0)
    t.failed("::1")
    t.failed("::1")
    t0 = time.monotonic()
    await t.before_attempt("::1")
    assert time.monotonic() - t0 >= 0.19
    t0 = time.monotonic()
    await asyncio.wait_for(t.before_attempt("127.0.0.9"), 0.05)


def test_concurrent_adds_from_several_processes_lose_nothing(tmp_path):
    path = tmp_path / "users"
    code = ("import sys; from relay.users import UserDB; db = UserDB(sys.argv[1]); "
            "[db.add(f'u{i}-{sys.argv[2]}@example.org', 'pw') for i in range(5)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(k)]) for k in range(4)]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    assert len(UserDB(path).list()) == 20


def test_successful_logins_are_cached_until_the_password_changes(tmp_path, monkeypatch):
    """A repeated right password skips scrypt (Dovecot-style auth cache); wrong passwords never
    do; a password change — here or by another process — ends the cached success at once."""
    import relay.users as users_mod
    calls = []
    real = users_mod.verify_password
    monkeypatch.setattr(users_mod, "verify_password", lambda pw, h: calls.append(1) or real(pw, h))
    path = tmp_path / "users"
    db, other = UserDB(path), UserDB(path)
    db.add("bob@example.org", "hunter2")
    assert db.authenticate("bob@example.org", "hunter2") and len(calls) == 1
    assert db.authenticate("BOB@example.org", "hunter2") and len(calls) == 1     # cached
    assert not db.authenticate("bob@example.org", "hunter3") and len(calls) == 2
    assert not db.authenticate("bob@example.org", "hunter3") and len(calls) == 3  # never cached
    assert "hunter2" not in repr(db._verified)
    other.set_password("bob@example.org", "new one")                  # another process
    assert not db.authenticate("bob@example.org", "hunter2") and len(calls) == 4
    assert db.authenticate("bob@example.org", "new one")
    monkeypatch.setattr(UserDB, "VERIFIED_TTL", 0.0)
    db.set_password("bob@example.org", "third")
    assert db.authenticate("bob@example.org", "third")
    n = len(calls)
    assert db.authenticate("bob@example.org", "third") and len(calls) == n + 1   # expired
