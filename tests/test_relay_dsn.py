"""RFC 3464 bounces and delay warnings, checked by parsing them back with the email package."""

from __future__ import annotations

import datetime
import email
import email.policy
import email.utils
from dataclasses import dataclass, field

import pytest

from relay.queue.dsn import DSNNotifier, RecipientStatus, diagnostic_of, make_dsn, mailer_daemon, status_of

UTC = datetime.timezone.utc
ARRIVAL = datetime.datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
NOW = datetime.datetime(2026, 11, 25, 9, 0, 5, tzinfo=UTC)
ORIGINAL = (b"Received: from client by crepes.fr; Fri, 20 Nov 2026 09:00:00 +0000\r\n"
            b"From: Alice <alice@crepes.fr>\r\nTo: bob@hamburger.edu\r\nSubject: Ketchup?\r\n"
            b"Message-ID: <k1@crepes.fr>\r\n\r\nSECRET BODY TEXT\r\n")


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def bounce(recipients, **kw):
    args = dict(hostname="crepes.fr", sender="alice@crepes.fr", original=ORIGINAL, recipients=recipients,
                arrival=ARRIVAL, now=NOW, queue_id="Q123")
    args.update(kw)
    return make_dsn(**args)


FAILED = [RecipientStatus("nobody@hamburger.edu", "failed", "5.1.1", "smtp; 550 5.1.1 no such user",
                          "mx.hamburger.edu", NOW),
          RecipientStatus("bob@hamburger.edu", "failed", "4.4.1", "smtp; 451 connect failed", "", NOW)]


def test_bounce_structure():
    raw = bounce(FAILED)
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["From"].addresses[0].addr_spec == mailer_daemon("crepes.fr") == "MAILER-DAEMON@crepes.fr"
    assert msg["To"] == "alice@crepes.fr"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == "<k1@crepes.fr>" and msg["References"] == "<k1@crepes.fr>"
    assert msg["Message-ID"].endswith("@crepes.fr>") and msg["Date"]
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    human, status, headers = msg.iter_parts()
    assert human.get_content_type() == "text/plain"
    text = human.get_content()
    assert "<nobody@hamburger.edu>: host mx.hamburger.edu said: 550 5.1.1 no such user" in text
    assert "could not be delivered" in text
    assert status.get_content_type() == "message/delivery-status"
    assert headers.get_content_type() == "text/rfc822-headers"
    assert raw.count(b"MIME-Version") == 1


def test_delivery_status_fields():
    msg = parse(bounce(FAILED))
    status = list(msg.iter_parts())[1]
    per_message, *per_rcpt = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; crepes.fr"
    assert email.utils.parsedate_to_datetime(per_message["Arrival-Date"]) == ARRIVAL
    assert len(per_rcpt) == 2
    first = per_rcpt[0]
    assert first["Final-Recipient"] == "rfc822; nobody@hamburger.edu"
    assert first["Action"] == "failed" and first["Status"] == "5.1.1"
    assert first["Remote-MTA"] == "dns; mx.hamburger.edu"
    assert first["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert email.utils.parsedate_to_datetime(first["Last-Attempt-Date"]) == NOW
    assert per_rcpt[1]["Remote-MTA"] is None and per_rcpt[1]["Status"] == "4.4.1"


def test_original_headers_but_not_the_body():
    raw = bounce(FAILED)
    headers = list(parse(raw).iter_parts())[2]
    text = headers.get_content()
    assert "Subject: Ketchup?" in text and "Message-ID: <k1@crepes.fr>" in text
    assert b"SECRET BODY TEXT" not in raw


def test_delay_warning():
    until = ARRIVAL + datetime.timedelta(days=5)
    raw = bounce([RecipientStatus("bob@hamburger.edu", "delayed", "4.4.1", "smtp; 451 4.4.1 connection refused",
                                  last_attempt=NOW, will_retry_until=until)])
    msg = parse(raw)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    human, status, _ = msg.iter_parts()
    assert "WARNING ONLY" in human.get_content()
    rcpt = status.get_payload()[1]
    assert rcpt["Action"] == "delayed"
    assert email.utils.parsedate_to_datetime(rcpt["Will-Retry-Until"]) == until


def test_never_bounce_a_bounce():
    assert bounce(FAILED, sender="") is None
    assert bounce([]) is None


def test_one_action_per_report():
    with pytest.raises(ValueError):
        bounce([FAILED[0], RecipientStatus("x@y", "delayed", "4.0.0")])
    with pytest.raises(ValueError):
        bounce([RecipientStatus("x@y", "delivered", "2.0.0")])


def test_non_ascii_original_and_recipient():
    original = "From: Jos\u00e9 <jose@crepes.fr>\r\nSubject: caf\u00e9 cr\u00e8me\r\n\r\nbody\r\n".encode()
    raw = bounce([RecipientStatus("b\u00f6b@hamburger.edu", "failed", "5.1.1", "smtp; 550 5.1.1 unknown")],
                 original=original, sender="jos\u00e9@crepes.fr")
    msg = parse(raw)
    _, status, headers = msg.iter_parts()
    assert status.get_payload()[1]["Final-Recipient"] == "utf-8; b\u00f6b@hamburger.edu"
    assert "Subject: caf\u00e9 cr\u00e8me" in headers.get_content()


def test_bounce_headers_cannot_be_injected_from_the_original():
    original = b"Message-ID: <a@b>\r\nSubject: x\r\n\r\n"
    raw = bounce(FAILED, original=original)
    assert parse(raw)["References"] == "<a@b>"
    # A folded, multi-line Message-ID is ignored rather than copied with its line break.
    raw = bounce(FAILED, original=b"Message-ID:\r\n <a@b>\r\n\r\n")
    assert parse(raw)["References"] is None


# ---- the notifier the queue runner calls ---------------------------------------------------


def test_status_from_last_reply():
    assert status_of(550, "5.1.1 no such user") == "5.1.1"
    assert status_of(550, "user unknown") == "5.0.0"
    assert status_of(451, "connect to x failed: connection refused") == "4.0.0"
    assert status_of(451, "4.4.1 connect failed", expired=True) == "4.4.7"
    assert status_of(0, "", expired=True) == "4.4.7"
    assert diagnostic_of(550, "5.1.1 no such user") == "smtp; 550 5.1.1 no such user"
    assert diagnostic_of(0, "no route") == "X-tui-mail; no route"


@dataclass
class _Rcpt:
    address: str
    code: int
    text: str
    updated: float = 0.0


@dataclass
class _Entry:
    id: str
    sender: str
    arrival: float
    data: bytes = ORIGINAL
    recipients: list = field(default_factory=list)

    def read_message(self) -> bytes:
        return self.data


async def test_notifier_queues_a_bounce_from_the_null_sender():
    queued = []

    async def enqueue(sender, recipients, data):
        queued.append((sender, recipients, data))

    n = DSNNotifier("crepes.fr", 5 * 86400, enqueue, clock=lambda: NOW.timestamp())
    entry = _Entry("Q1", "alice@crepes.fr", ARRIVAL.timestamp())
    await n.bounce(entry, [_Rcpt("bob@hamburger.edu", 451,
                                "message expired in the queue; last error: connect to x failed: connection refused",
                                NOW.timestamp())])
    await n.delay_warning(entry, [_Rcpt("carol@hamburger.edu", 451, "4.4.1 connection refused")])
    (s1, r1, d1), (s2, r2, d2) = queued
    assert (s1, r1, s2, r2) == ("", ["alice@crepes.fr"], "", ["alice@crepes.fr"])
    rcpt = list(parse(d1).iter_parts())[1].get_payload()[1]
    assert rcpt["Status"] == "4.4.7" and rcpt["Action"] == "failed"
    assert rcpt["Diagnostic-Code"] == "smtp; 451 connect to x failed: connection refused"
    rcpt = list(parse(d2).iter_parts())[1].get_payload()[1]
    assert rcpt["Action"] == "delayed" and rcpt["Status"] == "4.4.1"
    assert email.utils.parsedate_to_datetime(rcpt["Will-Retry-Until"]) == ARRIVAL + datetime.timedelta(days=5)
    assert n.sent == [("Q1", "failed"), ("Q1", "delayed")]


async def test_notifier_never_bounces_a_bounce():
    queued = []

    async def enqueue(*args):
        queued.append(args)

    n = DSNNotifier("crepes.fr", 3600, enqueue)
    await n.bounce(_Entry("Q2", "", ARRIVAL.timestamp()), [_Rcpt("x@y.example", 550, "5.1.1 unknown")])
    assert queued == [] and n.sent == []
