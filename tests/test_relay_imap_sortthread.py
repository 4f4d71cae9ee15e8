"""Pure SORT/THREAD/ESEARCH logic (relay.imap.sortkeys, threads, esearch): RFC 5256 base
subjects, sort orders, threading, and ESEARCH result encoding. No sockets."""

from __future__ import annotations

import pytest

from relay.imap.esearch import ReturnOptions, encode, parse_return, result_modseq
from relay.imap.parser import Atom, ParseError
from relay.imap.sortkeys import (SortData, SortError, address_key, base_subject, casemap,
                                 parse_criteria, sort_messages)
from relay.imap.threads import encode_threads, message_ids, ordered_subject, references


@pytest.mark.parametrize("subject, base, reply", [
    ("Hello", "HELLO", False),
    ("Re: Hello", "HELLO", True),
    ("RE:   re:Fw: hello", "HELLO", True),
    ("Fwd: hello (fwd)", "HELLO", True),
    ("[list] Re: [list] Hello (fwd)  (FWD)", "HELLO", True),
    ("[FWD: Re: hello]", "HELLO", True),
    ("[PATCH 1/2] thing", "THING", False),
    ("[only a blob]", "[ONLY A BLOB]", False),
    ("re [x]: a", "A", True),
    ("", "", False),
    ("  tabs\tand   spaces ", "TABS AND SPACES", False),
    ("Rebuild", "REBUILD", False),
])
def test_base_subject(subject, base, reply):
    assert base_subject(subject) == (base, reply)


def test_casemap_is_title_case_then_decomposed():
    assert casemap("abc_") == "ABC_"
    assert casemap("été") == "E\u0301TE\u0301"
    assert casemap("ß") == "ß"      # its title case is two characters: left as it is


def env(frm=None, to=None, cc=None, mid=None, irt=None):
    return [None, None, frm, frm, frm, to, cc, None, irt, mid]


def test_address_keys():
    e = env(frm=[[b"=?utf-8?q?=C3=89mile?=", None, b"emile", b"x.org"]], to=[[None, None, b"t", b"y.org"]])
    assert address_key(e, "FROM") == "emile"
    assert address_key(e, "DISPLAYFROM") == "Émile"
    assert address_key(e, "DISPLAYTO") == "t@y.org"
    assert address_key(e, "CC") == ""
    assert address_key(None, "TO") == ""


def m(uid, subject="s", date=None, arrival=None, size=10, frm=b"a", mid=None, irt=None, refs=""):
    e = env(frm=[[None, None, frm, b"x"]], mid=mid.encode() if mid else None,
            irt=irt.encode() if irt else None)
    return SortData(uid, float(arrival if arrival is not None else uid),
                    float(date if date is not None else uid), size, subject, e, refs)


def test_sort_reverse_applies_to_its_key_only_and_ties_keep_sequence_order():
    msgs = [m(1, size=5, arrival=2), m(2, size=5, arrival=1), m(3, size=1, arrival=1)]
    order = sort_messages(msgs, parse_criteria([Atom("REVERSE"), Atom("SIZE"), Atom("ARRIVAL")]))
    assert [x.uid for x in order] == [2, 1, 3]
    order = sort_messages(msgs, parse_criteria([Atom("REVERSE"), Atom("ARRIVAL")]))
    assert [x.uid for x in order] == [1, 2, 3]


@pytest.mark.parametrize("crit", [[], [Atom("REVERSE")], [Atom("BOGUS")],
                                  [Atom("REVERSE"), Atom("REVERSE"), Atom("DATE")]])
def test_bad_criteria(crit):
    with pytest.raises(SortError):
        parse_criteria(crit)


def test_message_ids():
    assert message_ids("<a@b> junk <nope> <c@d>\t<e @ f>") == ["a@b", "c@d", "e@f"]
    assert message_ids(b'<"q x"@d>') == ["q x@d"]
    assert message_ids(None) == []


def wire(roots):
    return encode_threads(roots, lambda x: x.uid)


def test_references_threads_by_parents_dummies_and_subjects():
    msgs = [
        m(1, "Hello", mid="<a@x>"),
        m(2, "Re: Hello", mid="<b@x>", refs="<a@x>"),
        m(3, "Re: Hello", mid="<c@x>", refs="<a@x> <b@x>"),
        m(4, "Orphan one", mid="<d@x>", irt="<gone@x>"),
        m(5, "Orphan two", mid="<e@x>", refs="<gone@x>"),
        m(6, "Re: Hello", mid="<f@x>"),                  # joins 1 by subject
        m(7, "Dup", mid="<a@x>"),                        # duplicate id: a thread of its own
    ]
    assert wire(references(msgs)) == "(1 (2 3)(6))((4)(5))(7)"


def test_references_ignores_loops():
    msgs = [m(1, "A", mid="<a@x>", refs="<b@x>"), m(2, "B", mid="<b@x>", refs="<a@x>")]
    assert wire(references(msgs)) == "(2 1)"


def test_ordered_subject():
    msgs = [m(1, "b", date=5), m(2, "Re: a", date=3), m(3, "a", date=4), m(4, "re: B", date=1)]
    assert wire(ordered_subject(msgs)) == "(4 1)(2 3)"
    msgs.append(m(5, "a", date=9))
    assert wire(ordered_subject(msgs)) == "(4 1)(2 (3)(5))"


def test_esearch_encoding():
    opts, rest = parse_return([Atom("RETURN"), [Atom("MIN"), Atom("COUNT"), Atom("ALL")], Atom("ALL")])
    assert rest == [Atom("ALL")]
    assert encode("A1", False, [1, 2, 3, 7], opts) == 'ESEARCH (TAG "A1") MIN 1 ALL 1:3,7 COUNT 4'
    assert encode("A1", True, [], opts) == 'ESEARCH (TAG "A1") UID COUNT 0'
    opts, _ = parse_return([Atom("RETURN"), [], Atom("ALL")])
    assert opts.options == ["ALL"]
    opts, _ = parse_return([Atom("RETURN"), [Atom("PARTIAL"), Atom("4:2")]])
    assert encode("t", False, [5, 3, 4, 2, 1], opts) == 'ESEARCH (TAG "t") PARTIAL (2:4 3:4,2)'
    assert encode("t", False, [1], opts) == 'ESEARCH (TAG "t") PARTIAL (2:4 NIL)'
    for bad in ("1", "1:*", "*:1", "0:3"):
        with pytest.raises(ParseError):
            parse_return([Atom("RETURN"), [Atom("PARTIAL"), Atom(bad)]])


def test_esearch_modseq_rules():
    mods = {1: 10, 2: 30, 3: 20}
    assert result_modseq([1, 2, 3], mods, ReturnOptions(["MIN"])) == 10
    assert result_modseq([1, 2, 3], mods, ReturnOptions(["MAX"])) == 20
    assert result_modseq([1, 2, 3], mods, ReturnOptions(["MIN", "MAX"])) == 20
    assert result_modseq([1, 2, 3], mods, ReturnOptions(["ALL"])) == 30
    assert result_modseq([], mods, ReturnOptions(["ALL"])) is None


def test_index_upgrade_from_schema_5_keeps_uids_and_reads_references_once(tmp_path):
    """An index written before the References column existed is upgraded in place on open
    (UIDVALIDITY and UIDs kept); THREAD's References are read from the files once."""
    import sqlite3

    from relay.store import MailStore
    from relay.store.index import FILENAME

    data = b"From: a@x\r\nMessage-ID: <c@x>\r\nReferences: <p@x>\r\n <q@x>\r\nSubject: s\r\n\r\nb\r\n"
    with MailStore(tmp_path) as store:
        u = store.user("bob@example.org")
        validity, uid = u.append("INBOX", data)
        root = u.root
    db = sqlite3.connect(root / FILENAME)
    db.execute("ALTER TABLE messages DROP COLUMN hdr_references")
    db.execute("UPDATE meta SET value='5' WHERE key='schema'")
    db.commit()
    db.close()
    with MailStore(tmp_path) as store:
        u = store.user("bob@example.org")
        assert u.state("INBOX").uidvalidity == validity
        (row,) = u.sort_fields("INBOX")
        assert row[0] == uid and message_ids(row[6]) == ["p@x", "q@x"]
    db = sqlite3.connect(root / FILENAME)
    assert db.execute("SELECT hdr_references FROM messages").fetchone()[0] is not None
    db.close()


def test_binary_decode_and_convert():
    from relay.imap.binary import UnknownCTE, binary_to_base64, decode, decode_part, wire

    m = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n"
         b"AAE=\r\n--b\r\nContent-Transfer-Encoding: x-uue\r\n\r\nzz\r\n--b--\r\n")
    assert decode(m, (1,)) == b"\x00\x01"
    assert decode(m, (3,)) is None
    with pytest.raises(UnknownCTE):
        decode(m, (2,))
    assert wire(b"a\x00") == b"~{2}\r\na\x00" and wire(b"ab") == b"{2}\r\nab"
    assert wire(b"ab", decoded=True) == b"~{2}\r\nab"
    # inside a multipart, encoded leaves are decoded and relabelled binary (RFC 3516 4.2)
    ok = m.replace(b"x-uue", b"7bit")
    whole, conv = decode_part(ok, ())
    assert conv and whole.startswith(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                                     b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\r\n--b")
    with pytest.raises(UnknownCTE):
        decode_part(m, ())
    raw = b"Content-Transfer-Encoding: binary\r\n\r\n\x00\xff\r\n"
    conv = binary_to_base64(raw)
    assert b"\x00" not in conv and b"base64" in conv and decode(conv, (1,)) == b"\x00\xff\r\n"


def test_append_arguments_and_urls():
    from relay.imap.append import BadURL, parse, parse_url

    items = parse([[Atom("\\Seen")], b"01-Jan-2024 10:00:00 +0000", b"one", b"two",
                   Atom("CATENATE"), [Atom("TEXT"), Atom("~"), b"x\x00", Atom("URL"), b"/A/;UID=3"]])
    assert [(i.flags, i.date is not None, i.binary) for i in items] == [
        (["\\Seen"], True, False), ([], False, False), ([], False, True)]
    assert items[2].parts == [("text", b"x\x00"), ("url", "/A/;UID=3")]
    u = parse_url("imap://bob@host/Sent%20Items;UIDVALIDITY=7/;UID=3/;SECTION=1.MIME/;PARTIAL=2.5")
    assert (u.mailbox, u.uidvalidity, u.uid, u.section, u.partial) == ("Sent Items", 7, 3, "1.MIME", (2, 5))
    with pytest.raises(BadURL):
        parse_url("/INBOX;UID=3")
    with pytest.raises(ParseError):
        parse([Atom("CATENATE"), []])


def test_context_update_steps_replay_to_the_new_order():
    from relay.imap.esearch import context_updates

    old, new = [5, 4, 3, 2, 1], [6, 5, 3, 1, 7]
    steps = context_updates(old, new, True)
    cur = list(old)
    for kind, pos, items in steps:
        if kind == "REMOVEFROM":
            assert cur[pos - 1:pos - 1 + len(items)] == items
            del cur[pos - 1:pos - 1 + len(items)]
        else:
            cur[pos - 1:pos - 1] = items
    assert cur == new
    assert context_updates([1, 2], [2, 3], False) == [("REMOVEFROM", 0, [1]), ("ADDTO", 0, [3])]


def test_sort_cache_loads_each_row_once_and_forgets_expunged():
    from relay.imap.sortkeys import SortCache

    loads = []

    def load(uids):
        loads.append(list(uids))
        return [(u, 100 + u, 10, None, f"s{u % 3}", env(frm=[[None, None, b"a%d" % u, b"x"]]), "")
                for u in uids]

    c = SortCache()
    data = c.rows_for([1, 2, 3], load)
    assert [m.uid for m in sort_messages(data, [("SUBJECT", False)], c)] == [3, 1, 2]
    c.rows_for([1, 2, 3, 4], load)
    assert loads == [[1, 2, 3], [4]]
    assert c.keys["SUBJECT"] == {1: b"S1", 2: b"S2", 3: b"S0"}
    many = list(range(10, 2100))
    c.rows_for(many, load)
    c.rows_for(many[:900], load)          # the rest were expunged: their entries go
    assert len(c.rows) == 900 and 1 not in c.keys["SUBJECT"]


def test_cache_registry_keeps_the_budget_and_drops_dead_owners():
    import gc

    from relay.imap.sortkeys import CacheRegistry

    class Owner:
        pass

    def load(uids):
        return [(u, 1, 1, None, "s", None, "") for u in uids]

    reg = CacheRegistry(budget=150)
    a, b = Owner(), Owner()
    ca = reg.get(a, "INBOX", 1)
    ca.rows_for(list(range(1, 101)), load)
    assert reg.get(a, "INBOX", 1) is ca and reg.get(a, "INBOX", 2) is not ca
    cb = reg.get(b, "INBOX", 1)
    cb.rows_for(list(range(1, 101)), load)
    reg.trim(keep=cb)                    # 200 > 150: the least recently used (a's) go
    assert reg.get(b, "INBOX", 1) is cb and reg.get(a, "INBOX", 1) is not ca
    big = reg.get(b, "Big", 1)
    big.rows_for(list(range(1, 201)), load)
    reg.trim(keep=big)                   # bigger than the whole budget: not kept either
    assert reg.get(b, "Big", 1) is not big
    del a, b
    gc.collect()
    reg.trim()
    assert len(reg) == 0
