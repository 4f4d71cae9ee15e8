"""Pure logic of the relay's LIST-EXTENDED, QRESYNC and NOTIFY support (relay.imap.listext,
qresync, notify): argument grammars and the choices they lead to. No sockets."""

from __future__ import annotations

import pytest

from relay.imap import listext, notify, qresync
from relay.imap.parser import Atom, ParseError, SequenceSet
from relay.imap.session import list_pattern
from relay.store.types import FolderInfo


def A(*names):
    return [Atom(n) for n in names]


FOLDERS = [FolderInfo("INBOX"), FolderInfo("Sent", "\\Sent"), FolderInfo("Work", has_children=True),
           FolderInfo("Work/a"), FolderInfo("Work/b", selectable=False, has_children=True),
           FolderInfo("Work/b/c")]


def rows(args, subs=frozenset()):
    req = listext.parse(args, str)
    return [(r.name, r.attrs, r.childinfo) for r in listext.select(req, FOLDERS, set(subs), list_pattern, "/")]


def test_list_extended_selection_and_return_options():
    assert rows([b"", [b"Work", b"Sent"]]) == [
        ("Sent", ["\\HasNoChildren", "\\Sent"], False), ("Work", ["\\HasChildren"], False)]
    assert rows([A("SUBSCRIBED"), b"", b"*"], {"Work/a", "Gone"}) == [
        ("Gone", ["\\Subscribed", "\\NonExistent"], False), ("Work/a", ["\\Subscribed"], False)]
    assert rows([A("SUBSCRIBED", "RECURSIVEMATCH"), b"", b"%"], {"Work/b/c"}) == [
        ("Work", [], True)]
    assert rows([A("SPECIAL-USE"), b"", b"*"]) == [("Sent", ["\\Sent"], False)]
    got = rows([b"", b"Work/%", Atom("RETURN"), A("SUBSCRIBED", "CHILDREN")], {"Work/a"})
    assert got == [("Work/a", ["\\Subscribed", "\\HasNoChildren"], False),
                   ("Work/b", ["\\Noselect", "\\HasChildren"], False)]
    req = listext.parse([b"", b"*", Atom("RETURN"), [Atom("STATUS"), A("MESSAGES", "UNSEEN")]], str)
    assert req.status == ["MESSAGES", "UNSEEN"] and listext.is_extended([b"", b"*", Atom("RETURN"), []])
    assert not listext.is_extended([b"", b"*"])


@pytest.mark.parametrize("args", [
    [A("RECURSIVEMATCH"), b"", b"*"], [A("REMOTE", "RECURSIVEMATCH"), b"", b"*"],
    [A("BOGUS"), b"", b"*"], [b"", b"*", Atom("RETURN"), A("BOGUS")],
    [b"", b"*", Atom("RETURN"), [Atom("STATUS"), A("NOPE")]], [b"", []],
])
def test_list_extended_errors(args):
    with pytest.raises(ParseError):
        listext.parse(args, str)


def test_qresync_select_parameters():
    q = qresync.parse_select_params([Atom("QRESYNC"), [Atom("67890007"), Atom("20050715194045000"),
                                                       Atom("41,43:211"), [Atom("1,3"), Atom("41,43")]]], True)
    assert (q.uidvalidity, q.modseq, q.known_uids.text) == (67890007, 20050715194045000, "41,43:211")
    assert qresync.parse_select_params([Atom("CONDSTORE")], False) is None
    with pytest.raises(ParseError):                    # not enabled
        qresync.parse_select_params([Atom("QRESYNC"), [Atom("1"), Atom("2")]], False)
    with pytest.raises(ParseError):
        qresync.parse_select_params([Atom("QRESYNC"), [Atom("1"), Atom("2"), Atom("3:*")]], True)
    assert qresync.filter_known([9, 3, 5], SequenceSet.parse("1:4,9"), 10) == [3, 9]
    assert qresync.parse_fetch_modifiers([Atom("CHANGEDSINCE"), Atom("5"), Atom("VANISHED")], True, True) == (5, True)
    for mods, uid, on in (([Atom("VANISHED")], True, True),
                          ([Atom("CHANGEDSINCE"), Atom("5"), Atom("VANISHED")], False, True),
                          ([Atom("CHANGEDSINCE"), Atom("5"), Atom("VANISHED")], True, False)):
        with pytest.raises(ParseError):
            qresync.parse_fetch_modifiers(mods, uid, on)


def test_notify_grammar_and_matching():
    spec = notify.parse([Atom("SET"), Atom("STATUS"),
                         [Atom("SELECTED"), [Atom("MessageNew"), A("UID", "FLAGS"), Atom("MessageExpunge")]],
                         [Atom("SUBTREE"), [b"Work"], A("MessageNew", "MessageExpunge")],
                         [Atom("PERSONAL"), Atom("NONE")]], lambda b: b.decode())
    assert spec.status and spec.selected_group().fetch == A("UID", "FLAGS")
    ev = notify.events_for(spec, "Work/a", selected=False, subscribed=False)
    assert ev == {"MESSAGENEW", "MESSAGEEXPUNGE"}
    assert notify.events_for(spec, "Sent", selected=False, subscribed=False) == set()   # PERSONAL NONE
    assert notify.status_items(ev) == ["MESSAGES", "UIDNEXT", "UIDVALIDITY"]
    assert notify.status_items({"FLAGCHANGE"}) == ["UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ"]
    assert notify.status_items(ev, True, initial=False) == ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN",
                                                            "HIGHESTMODSEQ"]
    assert notify.status_items({"FLAGCHANGE"}, False, initial=False) == ["MESSAGES", "UIDNEXT", "UIDVALIDITY",
                                                                        "UNSEEN"]
    assert notify.status_items({"MAILBOXNAME"}, True, initial=False) == []
    assert notify.parse([Atom("NONE")], str) is None
    with pytest.raises(notify.BadEvent):
        notify.parse([Atom("SET"), [Atom("PERSONAL"), A("AnnotationChange")]], str)
    for bad in ([Atom("SET")], [Atom("SET"), [Atom("EVERYWHERE"), A("MessageNew")]],
                [Atom("SET"), [Atom("PERSONAL"), [Atom("MessageNew"), A("UID")]]]):
        with pytest.raises(ParseError):
            notify.parse(bad, str)


# ------------------------------------------------------------------------------ fuzz
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from relay.imap import append as AP  # noqa: E402
from relay.imap import esearch as ES  # noqa: E402
from relay.imap.sortkeys import SortError, base_subject, parse_criteria  # noqa: E402
from relay.imap.threads import message_ids  # noqa: E402

WORDS = ["RETURN", "MIN", "MAX", "ALL", "COUNT", "PARTIAL", "UPDATE", "1:5", "5:1", "0:1", "*", "SAVE",
         "SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE", "CHILDREN", "STATUS", "MESSAGES",
         "QRESYNC", "CONDSTORE", "CHANGEDSINCE", "VANISHED", "1", "67890007", "1:*", "SET", "NONE",
         "SELECTED", "PERSONAL", "SUBTREE", "MAILBOXES", "MessageNew", "MessageExpunge", "FlagChange",
         "AnnotationChange", "CATENATE", "TEXT", "URL", "~", "REVERSE", "DATE", "SUBJECT", "DISPLAYFROM",
         "\\Seen", "INBOX"]


def tokens(depth=0):
    leaf = st.one_of(st.sampled_from(WORDS).map(Atom), st.binary(max_size=30),
                     st.sampled_from([b"01-Jan-2024 10:00:00 +0000", b"/INBOX/;UID=1", b"imap://h/x;UID=2"]))
    if depth >= 3:
        return leaf
    return st.one_of(leaf, st.lists(st.deferred(lambda: tokens(depth + 1)), max_size=4))


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXPECTED = (ParseError, SortError, AP.BadURL, notify.BadEvent)


@FUZZ
@given(st.lists(tokens(), max_size=6))
def test_fuzz_extension_parsers_raise_only_their_errors(args):
    for fn in (lambda a: ES.parse_return(a), lambda a: listext.parse(a, str),
               lambda a: qresync.parse_select_params(a, True), lambda a: qresync.parse_fetch_modifiers(a, True, True),
               lambda a: notify.parse(a, lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)),
               lambda a: AP.parse(a), lambda a: parse_criteria(a[0] if a else a)):
        try:
            fn(list(args))
        except EXPECTED:
            pass


@FUZZ
@given(st.text(max_size=60), st.binary(max_size=80))
def test_fuzz_subjects_and_ids(subject, raw):
    base, reply = base_subject(subject)
    assert isinstance(base, str) and isinstance(reply, bool) and not base.startswith(" ")
    for mid in message_ids(raw):
        assert "@" in mid and ">" not in mid
    try:
        AP.parse_url(raw.decode("utf-8", "replace"))
    except AP.BadURL:
        pass


def test_literals_of_one_command_are_capped_in_total():
    """MULTIAPPEND/CATENATE legitimately send several literals in one command; together they
    may not exceed two maximal literals, so one command cannot pile up memory."""
    from relay.imap.parser import BadInput, Command, CommandReader, ContinuationNeeded

    r = CommandReader(max_literal=10)
    r.receive_data(b"a APPEND INBOX {8+}\r\n12345678 {8+}\r\n12345678 {8+}\r\n12345678\r\nb NOOP\r\n")
    ev = r.next_event()
    assert isinstance(ev, BadInput) and ev.tag == "a" and "TOOBIG" in ev.message
    assert isinstance(r.next_event(), Command)            # the session goes on: b NOOP
    r = CommandReader(max_literal=10)
    r.receive_data(b"c APPEND INBOX {8}\r\n")
    assert isinstance(r.next_event(), ContinuationNeeded)
    r.receive_data(b"12345678 {9+}\r\n123456789\r\n")
    ev = r.next_event()
    assert isinstance(ev, Command) and ev.args[1:] == [b"12345678", b"123456789"]


def test_catenate_result_is_capped():
    item = AP.parse([Atom("CATENATE"), [Atom("TEXT"), b"x" * 10, Atom("URL"), b"/A/;UID=1",
                                        Atom("URL"), b"/A/;UID=1"]])[0]
    assert AP.build(item, lambda url: b"y" * 100, 210) == b"x" * 10 + b"y" * 200
    with pytest.raises(AP.TooBig):
        AP.build(item, lambda url: b"y" * 100, 209)
