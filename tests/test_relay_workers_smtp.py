"""The worker's per-message SMTP path: the fast MAIL/RCPT address parser gives aiosmtpd's result
for every input, and the loop-commit spool acknowledges only what is durable."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import QueueError
from relay.queue.spool import LoopCommitSpool, Spool
from relay.smtp.handlers import RelaySMTP

CASES = ["<a@b.c>", "<a@b.c> SIZE=100 BODY=8BITMIME", "<a.b+c@d-e.f>  x", "<>", "<a..b@c>", "<.a@c>",
         "<a@[1.2.3.4]>", '<"a b"@c>', "<a@b.c>x", "<A@B.C>", "<a@b>", "<@x:a@b>", "< a@b.c >",
         "a@b.c", "<a@b.c", "<a@b.c> ", "<a@b.c>\tSMTPUTF8", "<jø@b.c>", "<a@b..c>", "<a@-b.c>",
         "<" + "x" * 70 + "@b.c>", "<a@b.c> SIZE=1 ", ""]


class _Probe(RelaySMTP):
    def __init__(self):   # only what _getaddr uses
        self.local_part_limit = 64


class _Original(SMTP):
    def __init__(self):
        self.local_part_limit = 64


def outcome(parser, arg: str):
    try:
        return parser._getaddr(arg)
    except Exception as e:   # aiosmtpd itself raises on some inputs ("<"): the same must happen
        return type(e)


def same(arg: str) -> None:
    assert outcome(_Probe(), arg) == outcome(_Original(), arg), arg


@pytest.mark.parametrize("arg", CASES)
def test_fast_address_parser_matches_aiosmtpd(arg):
    same(arg)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="<>@.\"[] \tabcXYZ09-+_!~()\\:,;", max_size=30))
def test_fast_address_parser_matches_aiosmtpd_on_anything(arg):
    same(arg)


async def test_loop_commit_spool_groups_one_turn_and_commits_before_answering(tmp_path):
    spool = LoopCommitSpool(tmp_path / "q")
    committed = []
    entries = await asyncio.gather(*(spool.store("s@x", ["r@y"], b"Subject: %d\r\n\r\nbody\r\n" % i,
                                                 on_committed=committed.append) for i in range(20)))
    assert spool.batches == 1                      # twenty stores of one loop turn: one commit
    assert [e.id for e in committed] == [e.id for e in entries]
    reader = Spool(tmp_path / "q")
    assert sorted(reader.ids()) == sorted(e.id for e in entries)
    for e in entries:
        assert reader.load(e.id).read_message() == e.read_message()
    assert os.listdir(tmp_path / "q" / "tmp") == []


async def test_loop_commit_spool_reports_a_failed_write(tmp_path):
    spool = LoopCommitSpool(tmp_path / "q")
    os.rmdir(tmp_path / "q" / "tmp")
    (tmp_path / "q" / "tmp").write_bytes(b"")      # not a directory: the temp file cannot be made
    got = []
    with pytest.raises(QueueError, match="cannot write the queue file"):
        await spool.store("s@x", ["r@y"], b"x\r\n", on_committed=got.append)
    assert got == [] and Spool.ids(spool) == []


@pytest.mark.parametrize("close_first", [False, True])
async def test_loop_commit_spool_commits_for_a_cancelled_waiter_even_when_closing(tmp_path, close_first):
    """A client that vanishes during the fsync gets no 250, but what was committed reaches the
    master (on_committed), also when the worker is shutting down meanwhile."""
    spool = LoopCommitSpool(tmp_path / "q")
    got = []
    task = asyncio.create_task(spool.store("s@x", ["r@y"], b"Subject: x\r\n\r\nx\r\n", on_committed=got.append))
    await asyncio.sleep(0)          # queued; the commit starts on the next loop turn
    task.cancel()
    if close_first:
        spool.close()               # the worker stops before the commit started: done in the loop
    for _ in range(100):
        if got:
            break
        await asyncio.sleep(0.01)
    spool.close()
    assert len(got) == 1 and Spool(tmp_path / "q").load(got[0].id).read_message() == b"Subject: x\r\n\r\nx\r\n"
    with pytest.raises(asyncio.CancelledError):
        await task
