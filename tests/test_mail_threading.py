"""Threading (JWZ): by References/In-Reply-To, dummies for missing parents, loops and
duplicate ids tolerated, subject fallback, newest thread last; and every message exactly once."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from tui_mail.demo_data import classic_thread
from tui_mail.mail.parse import summary_from_headers
from tui_mail.mail.threading import thread
from tui_mail.store.base import MessageSummary


@dataclass
class M:
    uid: int
    message_id: str = ""
    in_reply_to: str = ""
    references: tuple = ()
    subject: str = ""
    date: object = None


def rows(msgs, **kw):
    return thread(msgs, **kw)


def test_simple_chain_and_siblings():
    msgs = [
        M(1, "<a>", subject="Topic", date=100),
        M(2, "<b>", "<a>", ("<a>",), "Re: Topic", 200),
        M(3, "<c>", "<b>", ("<a>", "<b>"), "Re: Topic", 300),
        M(4, "<d>", "<a>", ("<a>",), "Re: Topic", 250),
        M(5, "<e>", subject="Other", date=150),
    ]
    assert rows(msgs) == [(0, 5), (0, 1), (1, 2), (2, 3), (1, 4)]


def test_newest_thread_last_by_newest_message():
    msgs = [M(1, "<a>", subject="old thread", date=10), M(2, "<b>", subject="new thread", date=20),
            M(3, "<c>", "<a>", subject="Re: old thread", date=30)]
    assert rows(msgs) == [(0, 2), (0, 1), (1, 3)]


def test_in_reply_to_alone_and_as_string_references():
    msgs = [M(1, "<a>", date=1, subject="x"), M(2, "<b>", "<a> (sent by a)", date=2, subject="y"),
            M(3, "<c>", references="<a> <b>", date=3, subject="z")]
    assert rows(msgs) == [(0, 1), (1, 2), (2, 3)]


def test_missing_parent_becomes_a_dummy_holding_siblings():
    msgs = [M(1, "<x>", "<gone>", ("<gone>",), "Re: lost", 1),
            M(2, "<y>", "<gone>", ("<gone>",), "Re: lost", 2),
            M(3, "<z>", subject="unrelated", date=0)]
    assert rows(msgs) == [(0, 3), (0, 1), (0, 2)]


def test_single_child_of_a_dummy_root_is_promoted():
    msgs = [M(1, "<x>", "<gone>", ("<root>", "<gone>"), "Re: q", 1), M(2, "<y>", "<x>", ("<root>", "<gone>", "<x>"), "Re: q", 2)]
    assert rows(msgs) == [(0, 1), (1, 2)]


def test_reference_loops_are_tolerated():
    msgs = [M(1, "<a>", "<b>", ("<b>",), "loop", 1), M(2, "<b>", "<a>", ("<a>",), "loop", 2),
            M(3, "<c>", "<c>", ("<c>",), "self", 3)]
    out = rows(msgs)
    assert sorted(u for _, u in out) == [1, 2, 3]
    assert {u: d for d, u in out}[3] == 0


def test_duplicate_message_ids_keep_both():
    msgs = [M(1, "<same>", subject="a", date=1), M(2, "<same>", subject="b", date=2),
            M(3, "<r>", "<same>", subject="Re: a", date=3)]
    out = rows(msgs)
    assert sorted(u for _, u in out) == [1, 2, 3]
    assert out[-2:] == [(0, 1), (1, 3)]


def test_subject_fallback_for_replies_without_references():
    msgs = [M(1, "<a>", subject="Lunch?", date=1), M(2, "<b>", subject="RE: AW: lunch?", date=2),
            M(3, "<c>", subject="Lunch?", date=3), M(4, "<d>", subject="[team] Re: Lunch?", date=4)]
    out = rows(msgs)
    assert out == [(0, 3), (0, 1), (1, 2), (1, 4)]
    assert rows(msgs, subject_fallback=False) == [(0, 1), (0, 2), (0, 3), (0, 4)]


def test_messages_without_ids_or_dates():
    msgs = [M(1, subject="a"), M(2, subject="b", date=datetime(2026, 1, 1)), M(3, "", "<1>", subject="c")]
    assert sorted(u for _, u in rows(msgs)) == [1, 2, 3]


def test_threads_message_summaries_from_real_headers():
    now = datetime(2026, 11, 23, tzinfo=timezone.utc)
    summaries = []
    for uid, (_, raw) in enumerate(reversed(classic_thread(now)), 1):
        fields = summary_from_headers(raw.split(b"\r\n\r\n")[0])
        summaries.append(MessageSummary(uid=uid, flags=frozenset(), size=len(raw), **fields))
    # fed newest first; comes out as the conversation: 1 → 2 → 3 → 4
    by_uid = {s.uid: s.message_id for s in summaries}
    assert [(d, by_uid[u]) for d, u in rows(summaries)] == [
        (0, "<ketchup.1@crepes.fr>"), (1, "<ketchup.2@hamburger.edu>"),
        (2, "<ketchup.3@crepes.fr>"), (3, "<ketchup.4@hamburger.edu>")]


def test_depth_follows_parents():
    rnd = random.Random(3)
    msgs = []
    for i in range(500):
        if i and rnd.random() < 0.7:
            p = msgs[rnd.randrange(i)]
            msgs.append(M(i, f"<{i}>", p.message_id, p.references + (p.message_id,), "Re: t", i))
        else:
            msgs.append(M(i, f"<{i}>", subject=f"t{i}", date=i))
    rnd.shuffle(msgs)
    out = rows(msgs)
    by_id = {m.uid: m for m in msgs}
    depth = {u: d for d, u in out}
    assert len(out) == 500
    for d, u in out:
        m = by_id[u]
        if m.in_reply_to:
            parent_uid = int(m.in_reply_to.strip("<>"))
            assert d == depth[parent_uid] + 1
            # a parent is listed before its replies
            assert out.index((depth[parent_uid], parent_uid)) < out.index((d, u))
        else:
            assert d == 0


_ids = st.sampled_from([f"<{i}>" for i in range(8)] + [""])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_ids, _ids, st.lists(_ids, max_size=4), st.sampled_from(["a", "Re: a", "b", "Fwd: b", ""]),
                          st.one_of(st.none(), st.integers(0, 10))), max_size=20))
def test_every_message_exactly_once_whatever_the_references(specs):
    msgs = [M(i, mid, irt, tuple(r for r in refs if r), subj, d) for i, (mid, irt, refs, subj, d) in enumerate(specs)]
    out = rows(msgs)
    assert sorted(u for _, u in out) == list(range(len(msgs)))
    depths = [d for d, _ in out]
    assert not depths or depths[0] == 0
    assert all(b <= a + 1 for a, b in zip(depths, depths[1:]))
