"""SORT (RFC 5256) and SORT=DISPLAY (RFC 5957): sort criteria, sort keys and the ordering itself.

Pure functions over :class:`SortData` (one per message, built from what the store's index already
holds: INTERNALDATE, size, the Date: header as a timestamp, the decoded Subject, the cached
ENVELOPE and the References header), so a SORT over a big mailbox opens no message file.

The details follow RFC 5256 and match Dovecot (the oracle in tests): the RFC 5256 base subject
(section 2.1), strings compared after a Unicode title-case mapping and decomposition
(i;unicode-casemap), FROM/TO/CC by the addr-mailbox of the first address, DISPLAYFROM/DISPLAYTO
by the decoded display name or else ``mailbox@host``, DATE by the Date: header or INTERNALDATE
when it is missing or unparseable, SIZE by the RFC822.SIZE. REVERSE flips only its own key;
messages equal on every key keep sequence order. No library implements RFC 5256's base-subject
rules, so they are written out here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

SORT_KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO")


class SortError(ValueError):
    """Malformed sort criteria (the session answers BAD)."""


class SortData(NamedTuple):
    """What sorting and threading look at for one message."""

    uid: int
    arrival: float          # INTERNALDATE as a Unix time
    date: float             # Date: header as a Unix time, else ``arrival``
    size: int               # RFC822.SIZE
    subject: str            # Subject, RFC 2047-decoded
    envelope: list | None   # the cached ENVELOPE (nested lists of bytes/None)
    references: str = ""    # raw References header ("" when absent)


def from_store_row(row) -> SortData:
    """A row of relay.store's ``sort_fields`` (uid, internaldate, vsize, Date: or None,
    subject, envelope, references) as SortData; DATE falls back to INTERNALDATE. Only what
    sorting and threading read is kept of the envelope (first From/To/Cc address,
    In-Reply-To, Message-ID), so a cached row stays small."""
    uid, arrival, vsize, date, subject, env, refs = row
    if env:
        env = (None, None, _first(env[2]), None, None, _first(env[5]), _first(env[6]), None, env[8], env[9])
    return SortData(uid, float(arrival), float(date) if date else float(arrival), vsize,
                    subject or "", env, refs or "")


def _first(addrs):
    """The first address of an envelope address list, as a 1-tuple of a tuple (compact)."""
    return (tuple(addrs[0]),) if addrs else None


class CacheRegistry:
    """The SortCaches of every user's folders in this process. While together they hold more
    than ``budget`` messages, the least recently used are dropped (a dropped folder is read
    from the index again on its next SORT). Owners (a user's store) are held weakly."""

    def __init__(self, budget: int = 100_000) -> None:
        import threading
        from collections import OrderedDict
        self.budget = budget
        self._lock = threading.Lock()
        self._lru: "OrderedDict[tuple, tuple]" = OrderedDict()

    def get(self, owner, folder: str, validity: int) -> "SortCache":
        import weakref
        key = (id(owner), folder, validity)
        with self._lock:
            hit = self._lru.get(key)
            if hit is not None and hit[0]() is owner:
                self._lru.move_to_end(key)
                return hit[1]
            cache = SortCache()
            self._lru[key] = (weakref.ref(owner), cache)
            return cache

    def trim(self, keep: "SortCache | None" = None) -> None:
        """Drop caches, oldest first, until the budget holds (``keep``, the one in use, last:
        the caller still has its rows for the command at hand)."""
        with self._lock:
            for key in [k for k, (ref, _c) in self._lru.items() if ref() is None]:
                del self._lru[key]
            total = sum(len(c.rows) for _r, c in self._lru.values())
            for key in list(self._lru):
                if total <= self.budget:
                    break
                cache = self._lru[key][1]
                if cache is keep and len(cache.rows) <= self.budget:
                    continue        # in use; one folder bigger than the budget is not kept
                total -= len(cache.rows)
                del self._lru[key]

    def __len__(self) -> int:
        return len(self._lru)


class SortCache:
    """Sort and thread inputs of one folder (one UIDVALIDITY), kept between commands and
    sessions: a message's headers never change, so what was computed for a UID stays right as
    long as the UID exists. Rows come from the index once; each sort key and each message's
    thread ids are computed once, on first use. Not thread-safe on its own: the session uses
    it under ``lock``."""

    def __init__(self) -> None:
        import threading
        self.lock = threading.Lock()
        self.rows: dict[int, SortData] = {}
        self.keys: dict[str, dict[int, object]] = {}
        self.extra: dict[str, dict[int, object]] = {}

    def rows_for(self, uids, load) -> list[SortData]:
        """SortData for ``uids`` (ascending); ``load(missing_uids)`` gives store rows."""
        missing = [u for u in uids if u not in self.rows]
        if missing:
            for r in load(missing):
                self.rows[r[0]] = from_store_row(r)
        if len(self.rows) > 2 * max(len(uids), 1000):     # expunged messages: forget them
            keep = set(uids)
            for u in [u for u in self.rows if u not in keep]:
                self._forget(u)
        return [self.rows[u] for u in uids if u in self.rows]

    def _forget(self, uid: int) -> None:
        self.rows.pop(uid, None)
        for d in list(self.keys.values()) + list(self.extra.values()):
            d.pop(uid, None)

    def key(self, m: SortData, key: str):
        d = self.keys.setdefault(key, {})
        v = d.get(m.uid)
        if v is None:
            v = d[m.uid] = sort_key(m, key)
        return v

    def memo(self, name: str, m: SortData, fn):
        """Any other per-message value (thread ids, base subject with its reply flag)."""
        d = self.extra.setdefault(name, {})
        v = d.get(m.uid)
        if v is None:
            v = d[m.uid] = fn(m)
        return v


# ------------------------------------------------------------------------------ criteria
def parse_criteria(tok) -> list[tuple[str, bool]]:
    """``(REVERSE DATE SUBJECT)`` (a parsed list of atoms) → [("DATE", True), ("SUBJECT", False)]."""
    if not isinstance(tok, list) or not tok:
        raise SortError("SORT needs a parenthesised list of sort keys")
    out: list[tuple[str, bool]] = []
    reverse = False
    for t in tok:
        if not isinstance(t, str) or isinstance(t, bytes):
            raise SortError("Invalid sort key")
        k = str(t).upper()
        if k == "REVERSE":
            if reverse:
                raise SortError("REVERSE twice")
            reverse = True
            continue
        if k not in SORT_KEYS:
            raise SortError(f"Unknown sort key {k[:20]}")
        out.append((k, reverse))
        reverse = False
    if reverse or not out:
        raise SortError("REVERSE must be followed by a sort key")
    return out


# ------------------------------------------------------------------------------ strings
@lru_cache(maxsize=4096)
def casemap(text: str) -> str:
    """i;unicode-casemap as Dovecot applies it: each character title-cased (simple mapping:
    a character whose title case is several characters stays as it is), then decomposed."""
    if text.isascii():
        return text.upper()
    out = []
    for ch in text:
        t = ch.title()
        out.append(t if len(t) == 1 else ch)
    return unicodedata.normalize("NFKD", "".join(out))


_WSP = re.compile(r"[ \t\r\n]+")


def _blob_end(s: str, i: int) -> int:
    """If s[i:] starts with a subj-blob ``[…]`` (no nested brackets) return the index after it
    and one following space, else -1."""
    if i >= len(s) or s[i] != "[":
        return -1
    j = i + 1
    while j < len(s) and s[j] not in "[]":
        j += 1
    if j >= len(s) or s[j] != "]":
        return -1
    j += 1
    if j < len(s) and s[j] == " ":
        j += 1
    return j


def _leader_end(s: str, i: int) -> tuple[int, bool]:
    """Step (3): skip one subj-leader at i. Returns (new start, whether it was a Re:/Fwd:);
    a single leading space is skipped on its own."""
    if i < len(s) and s[i] == " ":
        i += 1
    j = i
    while j < len(s) and s[j] == "[":
        j = _blob_end(s, j)
        if j < 0:
            return i, False
    if s.startswith("RE", j):
        j += 2
    elif s.startswith("FWD", j):
        j += 3
    elif s.startswith("FW", j):
        j += 2
    else:
        return i, False
    if j < len(s) and s[j] == " ":
        j += 1
    if j < len(s) and s[j] == "[":
        j = _blob_end(s, j)
        if j < 0:
            return i, False
    if j >= len(s) or s[j] != ":":
        return i, False
    return j + 1, True


@lru_cache(maxsize=8192)
def base_subject(subject: str) -> tuple[str, bool]:
    """RFC 5256 section 2.1 base subject of an (already RFC 2047-decoded) Subject, case-mapped,
    and whether the subject marked a reply or forward (Re:, Fwd:, (fwd), [Fwd: …])."""
    s = _WSP.sub(" ", casemap(subject))
    reply = False
    start = 0
    while True:
        # (2) trailers: "(FWD)" and spaces at the end
        end = len(s)
        while end > start:
            if s[end - 1] == " ":
                end -= 1
            elif end - 5 >= start and s.endswith("(FWD)", 0, end):
                reply = True
                end -= 5
            else:
                break
        s = s[:end]
        # (3)-(5): leaders, and blobs that do not leave the subject empty
        while True:
            before = start
            new, is_refwd = _leader_end(s, start)
            reply = reply or is_refwd
            start = new
            k = _blob_end(s, start)
            if k >= 0 and k < len(s):
                start = k
            if start == before:
                break
        # (6) "[FWD: … ]" around the whole subject: unwrap and go again from (2)
        if s.startswith("[FWD:", start) and s.endswith("]") and len(s) - start >= 6:
            reply = True
            s = s[:-1]
            start += 5
            continue
        return s[start:], reply


# ------------------------------------------------------------------------------ address keys
def _decode(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if "=?" in v:
        from relay.store.mime import decode_words
        return decode_words(v.encode("utf-8", "surrogateescape"))
    return v


def _first_address(env: list | None, field: int):
    if not env or len(env) <= field:
        return None
    addrs = env[field]
    if not addrs:
        return None
    return addrs[0]


_ENV_FIELD = {"FROM": 2, "TO": 5, "CC": 6, "DISPLAYFROM": 2, "DISPLAYTO": 5}


def address_key(env: list | None, key: str) -> str:
    """FROM/TO/CC: addr-mailbox of the first address; DISPLAYFROM/DISPLAYTO: its decoded display
    name, or ``mailbox@host`` when it has none (RFC 5957). Not yet case-mapped."""
    a = _first_address(env, _ENV_FIELD[key])
    if a is None:
        return ""
    name, _adl, mailbox, host = (list(a) + [None] * 4)[:4]
    if key.startswith("DISPLAY"):
        shown = _decode(name).strip()
        if shown:
            return shown
        if mailbox is not None and host is not None:
            return _decode(mailbox) + "@" + _decode(host)
        return _decode(mailbox)
    return _decode(mailbox)


# ------------------------------------------------------------------------------ sorting
def sort_key(m: SortData, key: str):
    if key == "ARRIVAL":
        return m.arrival
    if key == "DATE":
        return m.date
    if key == "SIZE":
        return m.size
    if key == "SUBJECT":
        return base_subject(m.subject)[0].encode("utf-8", "surrogatepass")
    return casemap(address_key(m.envelope, key)).encode("utf-8", "surrogatepass")


def sort_messages(msgs: Sequence[SortData], criteria: list[tuple[str, bool]],
                  cache: SortCache | None = None) -> list[SortData]:
    """``msgs`` (in sequence order) ordered by ``criteria``; ties keep sequence order.
    Strings compare as UTF-8 bytes of their case-mapped form (strcmp, as Dovecot)."""
    out = list(msgs)
    # stable sorts from the least significant key up: each key's REVERSE applies to it alone
    for key, reverse in reversed(criteria):
        if cache is not None:
            out.sort(key=lambda m: cache.key(m, key), reverse=reverse)
        else:
            keys = {id(m): sort_key(m, key) for m in out}
            out.sort(key=lambda m: keys[id(m)], reverse=reverse)
    return out


__all__ = ["SORT_KEYS", "SortData", "SortError", "address_key", "base_subject", "casemap",
           "CacheRegistry", "SortCache", "from_store_row", "parse_criteria", "sort_key", "sort_messages"]
