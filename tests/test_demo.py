"""The demo world end to end with real clients: two relays in one process, alice on IMAP at
crepes.fr, bob on POP3 at hamburger.edu; deferral while hamburger.edu is down; a bounce."""

from __future__ import annotations

import email
import os
import poplib
import signal
import subprocess
import sys
import threading
import time
from email.policy import default

import pytest
from imapclient import IMAPClient

from tui_mail.demo import ALICE, BOB, BULK_FOLDER, PASSWORDS, DemoWorld


def wait_for(pred, timeout=10.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("condition not met in time")


@pytest.fixture
def world(tmp_path):
    w = DemoWorld(tmp_path / "demo", bulk=60)
    w.setup()
    yield w
    w.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith(("relay-", "demo-"))]


def submit(world, domain, user, to, subject, extra=b"", body=b"hello\r\n"):
    import smtplib

    host, port = world.relay(domain).addresses["submission"]
    msg = (f"From: {user}\r\nTo: {', '.join(to)}\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject.replace(' ', '.')}@{domain}>\r\n").encode() + extra + b"\r\n" + body
    with smtplib.SMTP(host, port) as s:
        s.login(user, PASSWORDS[user])
        s.sendmail(user, to, msg)


def bob_messages(world):
    host, port = world.relay("hamburger.edu").addresses["pop3"]
    p = poplib.POP3(host, port, timeout=5)
    try:
        p.user(BOB)
        p.pass_(PASSWORDS[BOB])
        n = p.stat()[0]
        return [email.message_from_bytes(b"\r\n".join(p.retr(i)[1]), policy=default) for i in range(1, n + 1)]
    finally:
        p.quit()


def alice_imap(world) -> IMAPClient:
    host, port = world.relay("crepes.fr").addresses["imap"]
    c = IMAPClient(host, port, ssl=False, timeout=5)
    c.login(ALICE, PASSWORDS[ALICE])
    return c


def alice_subjects(world, folder="INBOX"):
    with alice_imap(world) as c:
        c.select_folder(folder, readonly=True)
        uids = c.search("ALL")
        data = c.fetch(uids, ["ENVELOPE"]) if uids else {}
        return [(d[b"ENVELOPE"].subject or b"").decode() for d in data.values()]


def test_seeded_world_and_the_round_trip(world):
    world.start(bulk_in_background=False)
    assert "Do you like ketchup?" in alice_subjects(world, "Sent")
    inbox = alice_subjects(world)
    assert any("Gazette" in s for s in inbox) and "Recipe for Saturday" in inbox
    with alice_imap(world) as c:
        assert c.select_folder(BULK_FOLDER, readonly=True)[b"EXISTS"] == 60
    assert [m["Subject"] for m in bob_messages(world)][0] == "Do you like ketchup?"

    submit(world, "crepes.fr", ALICE, [BOB], "Lunch on Saturday")
    got = wait_for(lambda: [m for m in bob_messages(world) if m["Subject"] == "Lunch on Saturday"])
    assert "Received" in got[0]
    submit(world, "hamburger.edu", BOB, [ALICE], "Re: Lunch on Saturday",
           extra=b"In-Reply-To: <Lunch.on.Saturday@crepes.fr>\r\n")
    wait_for(lambda: "Re: Lunch on Saturday" in alice_subjects(world))


def test_hamburger_down_defers_then_delivers(world):
    world.start(stop_hamburger=True, bulk_in_background=False)
    submit(world, "crepes.fr", ALICE, [BOB], "While you were out")
    entry = wait_for(lambda: [e for e in world.relay("crepes.fr").queue()
                              if e["recipients"][0]["status"] == "deferred"])[0]
    assert entry["sender"] == ALICE and entry["last_error"]
    world.relay("hamburger.edu").start()
    world.relay("crepes.fr").flush()
    wait_for(lambda: any(m["Subject"] == "While you were out" for m in bob_messages(world)))
    wait_for(lambda: world.relay("crepes.fr").queue() == [])


def test_unknown_recipient_bounces_to_alice(world):
    world.start(bulk_in_background=False)
    submit(world, "crepes.fr", ALICE, ["nobody@hamburger.edu"], "Anyone there")

    def bounce():
        with alice_imap(world) as c:
            c.select_folder("INBOX", readonly=True)
            uids = c.search(["FROM", "MAILER-DAEMON"])
            return [email.message_from_bytes(d[b"RFC822"], policy=default)
                    for d in c.fetch(uids, ["RFC822"]).values()] if uids else None

    dsn = wait_for(bounce)[0]
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    status = dsn.get_payload()[1].as_string()
    assert "nobody@hamburger.edu" in status and "Action: failed" in status and "5.1.1" in status


def test_relay_panel_renders_queue_and_log(world):
    from rich.console import Console

    from tui_mail.ui.demo_app import log_text, queue_table

    world.start(stop_hamburger=True, bulk_in_background=False)
    submit(world, "crepes.fr", ALICE, [BOB], "Queued one")
    entries = wait_for(lambda: world.relay("crepes.fr").queue())
    console = Console(width=160, record=True, color_system=None)
    console.print(queue_table("crepes.fr", True, world.relay("crepes.fr").addresses, entries, time.time()))
    console.print(log_text(world.log.tail("crepes.fr")))
    out = console.export_text()
    assert "bob@hamburger.edu (" in out and "crepes.fr" in out and "from=<alice@crepes.fr>" in out
    # the onward scheduler's line for hamburger.edu (down): deferred, with the refusal
    from tui_mail.ui.demo_app import destinations_text

    dests = wait_for(lambda: [d for d in world.relay("crepes.fr").destinations() if d["state"] != "ok"])
    console.print(destinations_text(dests, time.time()))
    line = console.export_text().splitlines()[-1]
    assert line.startswith("  → hamburger.edu 127.0.0.1:") and "deferred" in line and "refused" in line


def test_demo_command_leaves_no_process_and_no_temp_dir(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    proc = subprocess.Popen([sys.executable, "-m", "tui_mail.cli", "demo", "--no-ui", "--messages", "20"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("crepes.fr: ") and "submission 127.0.0.1:" in line
        assert any(tmp.iterdir())
        wait_for(lambda: proc.stdout.readline().startswith("Ctrl+C"), timeout=20)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert list(tmp.iterdir()) == []
