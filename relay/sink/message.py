"""A stored message as JSON data, in Mailpit's shape (``GET /api/v1/message/{ID}``).

Parsed with the standard library's ``email`` package (policy.default): it decodes RFC 2047
words, charsets and transfer encodings, which is all this needs. Everything taken from the
message is data: it ends up in JSON strings (escaped by ``json.dumps``), never in markup;
headers, text and the attachment list are bounded (``MAX_*``) with a ``Truncated`` flag.
"""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime

MAX_HEADERS = 500          # header fields in "Headers"
MAX_HEADER_VALUE = 16384   # characters per header value
MAX_TEXT = 4 * 1024 * 1024  # characters of Text and of HTML each
MAX_PARTS = 1000           # attachments + inline parts listed
SNIPPET = 250


def parse(data: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(data)  # type: ignore[return-value]


def _raw_header(msg: EmailMessage, name: str) -> list[str]:
    out = []
    for v in msg.get_all(name, []) or []:
        try:
            out.append(str(v))
        except Exception:   # an undecodable header: its raw text, still data
            out.append(str(getattr(v, "_parse_tree", v)))
    return out


def addresses(msg: EmailMessage, name: str) -> list[dict]:
    vals = _raw_header(msg, name)
    try:
        pairs = getaddresses(vals)
    except Exception:
        pairs = []
    return [{"Name": n, "Address": a} for n, a in pairs if a or n]


def _text_of(part) -> str:
    try:
        text = part.get_content()
    except Exception:
        payload = part.get_payload(decode=True) or b""
        text = payload.decode("utf-8", "replace")
    return text if isinstance(text, str) else text.decode("utf-8", "replace")


def _bodies(msg: EmailMessage):
    text_part = html_part = None
    try:
        text_part = msg.get_body(("plain",))
        html_part = msg.get_body(("html",))
    except Exception:
        pass
    return text_part, html_part


def parts(msg: EmailMessage) -> list[dict]:
    """Every leaf part that is not the chosen text/html body, in order; ``PartID`` is its
    index in this list (what ``/part/{PartID}`` and ``/attachment/{n}`` take)."""
    text_part, html_part = _bodies(msg)
    out = []
    for p in msg.walk():
        if p.is_multipart() or p is text_part or p is html_part:
            continue
        if p is msg and not msg.get_content_disposition() and msg.get_content_maintype() == "text":
            continue
        disp = p.get_content_disposition() or ""
        cid = (p.get("Content-ID") or "").strip().strip("<>")
        payload = p.get_payload(decode=True) or b""
        out.append({"PartID": str(len(out)), "FileName": p.get_filename() or "",
                    "ContentType": p.get_content_type(), "ContentID": cid,
                    "Inline": disp == "inline" or (bool(cid) and disp != "attachment"),
                    "Size": len(payload), "_part": p})
        if len(out) >= MAX_PARTS:
            break
    return out


def part_bytes(msg: EmailMessage, index: int) -> tuple[bytes, str, str] | None:
    """(decoded bytes, content type, file name) of part ``index``, None if there is none."""
    ps = parts(msg)
    if not 0 <= index < len(ps):
        return None
    p = ps[index]
    return (p["_part"].get_payload(decode=True) or b""), p["ContentType"], p["FileName"]


def _public(p: dict) -> dict:
    return {k: v for k, v in p.items() if not k.startswith("_")}


def _date(msg: EmailMessage) -> str:
    v = msg.get("Date")
    try:
        return parsedate_to_datetime(str(v)).isoformat() if v else ""
    except Exception:
        return ""


def summary(msg_id: str, data: bytes, *, read: bool, created: str) -> dict:
    """One row of ``GET /api/v1/messages`` (Mailpit's MessageSummary)."""
    msg = parse(data[:256 * 1024] if len(data) > 256 * 1024 else data)
    text_part, html_part = _bodies(msg)
    snippet = " ".join(_text_of(text_part).split())[:SNIPPET] if text_part is not None else ""
    frm = addresses(msg, "From")
    return {"ID": msg_id, "MessageID": (msg.get("Message-ID") or "").strip().strip("<>")[:998],
            "Read": read, "From": frm[0] if frm else {"Name": "", "Address": ""},
            "To": addresses(msg, "To"), "Cc": addresses(msg, "Cc"), "Bcc": addresses(msg, "Bcc"),
            "ReplyTo": addresses(msg, "Reply-To"),
            "EnvelopeFrom": _envelope(msg, "X-Envelope-From")[:1][0] if _envelope(msg, "X-Envelope-From") else "",
            "EnvelopeTo": _envelope(msg, "X-Envelope-To"),
            "Subject": str(msg.get("Subject") or "")[:MAX_HEADER_VALUE], "Date": _date(msg), "Created": created,
            "Size": len(data), "Attachments": sum(1 for p in parts(msg) if not p["Inline"]),
            "Snippet": snippet, "Tags": []}


def _envelope(msg: EmailMessage, name: str) -> list[str]:
    return [v.strip().strip("<>") for v in _raw_header(msg, name)]


def full(msg_id: str, data: bytes, *, read: bool, created: str) -> dict:
    """``GET /api/v1/message/{ID}``: Mailpit's Message plus ``Headers``."""
    msg = parse(data)
    out = summary(msg_id, data, read=read, created=created)
    text_part, html_part = _bodies(msg)
    text = _text_of(text_part) if text_part is not None else ""
    html = _text_of(html_part) if html_part is not None else ""
    ps = parts(msg)
    headers: dict[str, list[str]] = {}
    for i, (name, _) in enumerate(msg.items()):
        if i >= MAX_HEADERS:
            out["Truncated"] = True
            break
        if name not in headers:
            headers[name] = [v[:MAX_HEADER_VALUE] for v in _raw_header(msg, name)]
    out.pop("Snippet", None)
    out.update({
        "ReturnPath": out["EnvelopeFrom"],
        "Headers": headers,
        "Text": text[:MAX_TEXT], "HTML": html[:MAX_TEXT],
        "Attachments": [_public(p) for p in ps if not p["Inline"]],
        "Inline": [_public(p) for p in ps if p["Inline"]],
    })
    if len(text) > MAX_TEXT or len(html) > MAX_TEXT:
        out["Truncated"] = True
    return out
