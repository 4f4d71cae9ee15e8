"""Bounces and delay warnings as RFC 3464 delivery status notifications. Pure: bytes in, bytes out.

A DSN is a ``multipart/report; report-type=delivery-status`` (RFC 6522) with three parts:

1. ``text/plain`` — what happened, in words, for the person who sent the message;
2. ``message/delivery-status`` — the machine-readable part: per-message fields (Reporting-MTA,
   Arrival-Date) then one block per recipient (Final-Recipient, Action, Status, Remote-MTA,
   Diagnostic-Code, Last-Attempt-Date, and Will-Retry-Until for a delay);
3. ``text/rfc822-headers`` — the original message's headers, so the sender can tell which
   message it was without us echoing the whole body back.

It is sent from the null path ``<>`` (RFC 5321 §4.5.5) with ``From: MAILER-DAEMON@hostname``
and ``Auto-Submitted: auto-replied`` (RFC 3834). A message whose envelope sender is null is
itself a bounce: it never gets one (:func:`make_dsn` returns None), which is what stops
bounce loops. The ``email`` package builds the MIME; its generator knows how to write a
message/delivery-status body from a list of header blocks.

Everything above :class:`DSNNotifier` is pure. The notifier is the thin edge the queue runner
calls on permanent failure, expiry and delay: it reads the original's headers, builds the DSN
and hands it to an ``enqueue`` coroutine that stores it in the spool like any other message.
"""

from __future__ import annotations

import asyncio
import datetime
import email.policy
import re
import time
import email.utils
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage, Message

BOUNCE_SENDER = ""  # the null reverse-path: bounces are sent MAIL FROM:<>


@dataclass(frozen=True)
class RecipientStatus:
    """The fate of one recipient, as it goes into a DSN."""

    recipient: str
    action: str              # "failed" | "delayed" (RFC 3464 §2.3.3)
    status: str              # RFC 3463 code, e.g. "5.1.1"
    diagnostic: str = ""     # "smtp; 550 5.1.1 no such user"
    remote_mta: str = ""
    last_attempt: datetime.datetime | None = None
    will_retry_until: datetime.datetime | None = None


def mailer_daemon(hostname: str) -> str:
    return f"MAILER-DAEMON@{hostname}"


def make_dsn(*, hostname: str, sender: str, original: bytes, recipients: Sequence[RecipientStatus],
             arrival: datetime.datetime, now: datetime.datetime, queue_id: str = "") -> bytes | None:
    """The DSN to send to ``sender`` about ``recipients`` of ``original``; None when no DSN may
    be sent (null sender, or nobody to report on). All recipients must share one action."""
    if sender == BOUNCE_SENDER or not recipients:
        return None
    actions = {r.action for r in recipients}
    if len(actions) != 1 or not actions <= {"failed", "delayed"}:
        raise ValueError(f"one DSN reports one action (failed or delayed), got {sorted(actions)}")
    delayed = actions == {"delayed"}
    msg = EmailMessage(policy=email.policy.SMTPUTF8)
    msg["From"] = f"Mail Delivery System <{mailer_daemon(hostname)}>"
    msg["To"] = sender
    msg["Subject"] = ("Delayed Mail (still being retried)" if delayed
                      else "Undelivered Mail Returned to Sender")
    msg["Date"] = email.utils.format_datetime(now)
    msg["Message-ID"] = email.utils.make_msgid("dsn", domain=hostname)
    msg["Auto-Submitted"] = "auto-replied"
    orig_id = _original_header(original, "Message-ID")
    if orig_id:
        msg["References"] = orig_id
        msg["In-Reply-To"] = orig_id
    msg.set_content(_human_text(hostname, recipients, delayed, queue_id))
    msg.make_mixed()
    msg.set_type("multipart/report")
    msg.set_param("report-type", "delivery-status")

    status = EmailMessage(policy=email.policy.SMTPUTF8)
    status["Content-Type"] = "message/delivery-status"
    status["Content-Description"] = "Delivery report"
    blocks = [_per_message(hostname, arrival, queue_id)] + [_per_recipient(r) for r in recipients]
    status.set_payload(blocks)
    msg.attach(status)

    headers = EmailMessage(policy=email.policy.SMTPUTF8)
    text = header_block(original).decode("utf-8", "replace").replace("\r\n", "\n")
    headers.set_content(text + "\n", subtype="rfc822-headers", cte="8bit" if not text.isascii() else "7bit")
    del headers["MIME-Version"]  # only the top level carries it
    headers["Content-Description"] = "Undelivered Message Headers" if not delayed else "Delayed Message Headers"
    msg.attach(headers)
    return msg.as_bytes(policy=email.policy.SMTPUTF8.clone(linesep="\r\n"))


def _per_message(hostname: str, arrival: datetime.datetime, queue_id: str) -> Message:
    m = Message()
    m["Reporting-MTA"] = f"dns; {hostname}"
    if queue_id:
        m["X-Queue-ID"] = queue_id  # RFC 3464 extension fields are X-; lets operators find it
    m["Arrival-Date"] = email.utils.format_datetime(arrival)
    return m


def _per_recipient(r: RecipientStatus) -> Message:
    m = Message()
    addr_type = "rfc822" if r.recipient.isascii() else "utf-8"  # RFC 6533
    m["Final-Recipient"] = f"{addr_type}; {r.recipient}"
    m["Action"] = r.action
    m["Status"] = r.status
    if r.remote_mta:
        m["Remote-MTA"] = f"dns; {r.remote_mta}"
    if r.diagnostic:
        m["Diagnostic-Code"] = r.diagnostic if ";" in r.diagnostic.split(" ", 1)[0] else f"smtp; {r.diagnostic}"
    if r.last_attempt:
        m["Last-Attempt-Date"] = email.utils.format_datetime(r.last_attempt)
    if r.will_retry_until:
        m["Will-Retry-Until"] = email.utils.format_datetime(r.will_retry_until)
    return m


def _human_text(hostname: str, recipients: Sequence[RecipientStatus], delayed: bool, queue_id: str) -> str:
    lines = [f"This is the mail system at host {hostname}.", ""]
    if delayed:
        lines += ["####### THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #######", "",
                  "Your message could not be delivered yet. The mail system will keep trying."]
        until = next((r.will_retry_until for r in recipients if r.will_retry_until), None)
        if until:
            lines.append(f"It will give up on {email.utils.format_datetime(until)}.")
    else:
        lines += ["I'm sorry to have to inform you that your message could not be delivered to",
                  "one or more recipients. It's attached below."]
    lines += ["", "The problem" + (" so far" if delayed else "") + " was:", ""]
    for r in recipients:
        why = r.diagnostic.split(";", 1)[-1].strip() if r.diagnostic else f"status {r.status}"
        where = f"host {r.remote_mta} said: " if r.remote_mta else ""
        lines.append(f"<{r.recipient}>: {where}{why}")
    if queue_id:
        lines += ["", f"(queue id {queue_id})"]
    return "\n".join(lines) + "\n"


def header_block(data: bytes) -> bytes:
    """The header section of a raw message (up to the first empty line)."""
    m = re.search(rb"\r?\n\r?\n", data)
    return data[: m.start()] if m else data


def _original_header(original: bytes, name: str) -> str:
    prefix = name.lower().encode() + b":"
    for line in header_block(original).splitlines():
        if line.lower().startswith(prefix):
            value = line[len(prefix):].strip().decode("ascii", "replace")
            if value and "\r" not in value and "\n" not in value:
                return value
    return ""


# ---- the I/O edge: turning queue events into queued DSNs --------------------------------

_STATUS_IN_TEXT = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
EXPIRED_STATUS = "4.4.7"  # RFC 3463: delivery time expired


def status_of(code: int, text: str, expired: bool = False) -> str:
    """The RFC 3463 status for a recipient from its last reply (code and text)."""
    m = _STATUS_IN_TEXT.match(text)
    if m and not expired:
        return m.group(1)
    if expired:
        return m.group(1) if m and m.group(1).startswith("5") else EXPIRED_STATUS
    if 500 <= code < 600:
        return "5.0.0"
    return "4.0.0"


def diagnostic_of(code: int, text: str) -> str:
    return f"smtp; {code} {text}".rstrip() if code else (f"X-tui-mail; {text}" if text else "")


class DSNNotifier:
    """The queue runner's notifier: builds the DSN and queues it, from <>, to the sender.

    ``enqueue(sender, recipients, data)`` stores a message in the spool and hands it to the
    runner (the relay wires it up); bounces then travel like any other mail — into the
    sender's Maildir when the sender is local, onward otherwise."""

    def __init__(self, hostname: str, max_lifetime: float, enqueue, clock=time.time):
        self.hostname = hostname
        self.max_lifetime = max_lifetime
        self.enqueue = enqueue
        self.clock = clock
        self.sent: list[tuple[str, str]] = []  # (queue id reported on, "failed"|"delayed")

    def _statuses(self, entry, recipients, action: str) -> list[RecipientStatus]:
        now = _dt(self.clock())
        out = []
        for r in recipients:
            expired = r.text.startswith("message expired")
            last = r.text.split("last error: ", 1)[1] if expired and "last error: " in r.text else r.text
            out.append(RecipientStatus(
                r.address, action, status_of(r.code, last, expired), diagnostic_of(r.code, last) if r.code or last else "",
                last_attempt=_dt(r.updated) if r.updated else now,
                will_retry_until=_dt(entry.arrival + self.max_lifetime) if action == "delayed" else None))
        return out

    async def _send(self, entry, recipients, action: str) -> None:
        raw = make_dsn(hostname=self.hostname, sender=entry.sender, original=await _read(entry),
                       recipients=self._statuses(entry, recipients, action), arrival=_dt(entry.arrival),
                       now=_dt(self.clock()), queue_id=entry.id)
        if raw is None:  # null sender: never bounce a bounce
            return
        await self.enqueue(BOUNCE_SENDER, [entry.sender], raw)
        self.sent.append((entry.id, action))

    async def bounce(self, entry, recipients) -> None:
        await self._send(entry, recipients, "failed")

    async def delay_warning(self, entry, recipients) -> None:
        await self._send(entry, recipients, "delayed")


def _dt(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


async def _read(entry) -> bytes:
    try:
        return await asyncio.to_thread(entry.read_message)
    except OSError:
        return b""  # the queue file is gone (deleted meanwhile): report without headers
