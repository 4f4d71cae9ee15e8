"""Local delivery: queued message → the recipient's Maildir++ INBOX, exactly once.

Mailbox layout (shared with relay/store and the IMAP/POP3 servers): ``cfg.mail_dir /
<address lowercased> /`` is a Maildir++ whose root is INBOX (``tmp/ new/ cur/``) and whose
folders are ``.Name`` subdirectories.

A delivery writes ``tmp/<name>``, renames it to ``new/<name>`` and fsyncs the file and ``new/``
before the queue records it as delivered (rename before fsync halves the journal commits; a
file torn by a power loss is recognised by its size on the retry and written again).
``<name>`` is deterministic per (queue ID, recipient): ``<ID>.<sha1(rcpt)[:12]>.<hostname>``.
So if the relay dies after the rename but before the queue records "sent", the retry finds
``new/<name>`` (or ``cur/<name>:2,FLAGS`` once a reader has seen it) and does not deliver again.

The delivered file is the queued message (our SMTP Received header already on top) with
``Return-Path`` and ``Delivered-To`` prepended, byte for byte, CRLF line endings as on the wire.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from relay.queue.spool import write_batch
from relay.remote import DeliveryResult

_UNSAFE = re.compile(r"[/\x00]|^\.")


def maildir_for(mail_dir: Path, address: str) -> Path:
    name = address.strip().lower()
    if not name or _UNSAFE.search(name) or name in (".", ".."):
        raise ValueError(f"unsafe mailbox name {address!r}")
    return mail_dir / name


def ensure_maildir(root: Path) -> None:
    for sub in ("tmp", "new", "cur"):
        (root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)


def unique_name(queue_id: str, recipient: str, hostname: str) -> str:
    digest = hashlib.sha1(recipient.lower().encode("utf-8")).hexdigest()[:12]
    host = hostname.replace("/", "\\057").replace(":", "\\072")
    return f"{queue_id}.{digest}.{host}"


def already_delivered(root: Path, name: str, *, look_in_cur: bool = True, size: int | None = None) -> bool:
    """True if ``name`` is in new/ (with the expected ``size``, when given) or, as
    ``name:2,FLAGS``, in cur/."""
    try:
        st = (root / "new" / name).stat()
        if size is None or st.st_size == size:
            return True
    except FileNotFoundError:
        pass
    if not look_in_cur:
        return False
    cur = root / "cur"
    if (cur / name).exists() or (cur / f"{name}:2,").exists():
        return True
    try:
        with os.scandir(cur) as it:
            return any(e.name.split(":", 1)[0] == name for e in it)
    except FileNotFoundError:
        return False


def delivery_headers(sender: str, recipient: str) -> bytes:
    return f"Return-Path: <{sender}>\r\nDelivered-To: {recipient}\r\n".encode("utf-8")


_ENSURED: set[Path] = set()


def _ensure_once(root: Path) -> None:
    if root not in _ENSURED or not (root / "new").is_dir():
        ensure_maildir(root)
        _ENSURED.add(root)


def deliver_local(mail_dir: Path, queue_id: str, sender: str, recipient: str, message: bytes,
                  hostname: str, *, recovering: bool = False) -> DeliveryResult:
    """Deliver one message to one local mailbox (blocking; run it in a thread).

    ``recovering``: the entry was found in the queue at start-up, so a previous run may have
    delivered it already; look in cur/ too (new/ is always checked, it is one stat)."""
    return deliver_batch(mail_dir, [(queue_id, sender, recipient, message, recovering)], hostname)[0]


def deliver_batch(mail_dir: Path, jobs: list[tuple[str, str, str, bytes, bool]], hostname: str) -> list[DeliveryResult]:
    """Deliver many (queue_id, sender, recipient, message, recovering) at once with one group
    commit (:func:`relay.queue.spool.write_batch`): same guarantees as one by one, a fraction
    of the fsyncs when mail arrives in bursts."""
    results: list[DeliveryResult | None] = [None] * len(jobs)
    items, where = [], []
    for k, (queue_id, sender, recipient, message, recovering) in enumerate(jobs):
        try:
            root = maildir_for(mail_dir, recipient)
        except ValueError as e:
            results[k] = DeliveryResult("failed", 550, str(e), "5.1.3", "local")
            continue
        name = unique_name(queue_id, recipient, hostname)
        content = delivery_headers(sender, recipient) + message
        try:
            _ensure_once(root)
            if already_delivered(root, name, look_in_cur=recovering, size=len(content)):
                results[k] = DeliveryResult("sent", 250, "delivered to maildir (found after restart)", "2.0.0", "local")
                continue
        except OSError as e:
            results[k] = DeliveryResult("deferred", 451, f"cannot write to the mailbox: {e.strerror or e}", "4.3.0", "local")
            continue
        items.append((root / "tmp" / name, root / "new" / name, content))
        where.append(k)
    # rename, then fsync: one journal commit for data and names. A power loss in between can
    # leave a short file in new/; the retry recognises it by its size and writes it again.
    for k, err in zip(where, write_batch(items, sync_before_rename=False)):
        if err is None:
            results[k] = DeliveryResult("sent", 250, "delivered to maildir", "2.0.0", "local")
        else:
            results[k] = DeliveryResult("deferred", 451, f"cannot write to the mailbox: {err.strerror or err}",
                                        "4.3.0", "local")
    return results  # type: ignore[return-value]
