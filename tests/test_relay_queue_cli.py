"""The control socket (real Unix socket, real client) and the `relay queue` rendering.

The full path — a running relay with its queue, driven by the CLI — is in test_relay_onward.py."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import time

import pytest
from rich.console import Console

from relay.config import parse_config
from relay.control import ControlError, ControlServer, _socket_address, request
from relay.errors import NotRunning, RelayError
from relay.queue_cli import human_age, human_size, main, render_list


def test_human_age_and_size():
    assert [human_age(s) for s in (-5, 0, 59, 60, 3599, 3600, 7500, 86400, 90000)] == \
        ["0s", "0s", "59s", "1m", "59m", "1h00m", "2h05m", "1d00h", "1d01h"]
    assert human_size(512) == "512B" and human_size(2048) == "2.0K" and human_size(3 * 1024 * 1024) == "3.0M"


def test_render_list_one_row_per_recipient():
    out = Console(file=io.StringIO(), width=200, markup=False, highlight=False)
    now = time.time()
    render_list(out, [{"id": "ABC123", "sender": "", "arrival": now - 7500, "size": 2048, "next_attempt": now + 600,
                       "recipients": [{"address": "bob@hamburger.edu", "status": "deferred",
                                       "text": "connect to [127.0.0.1]:25 failed: connection refused"},
                                      {"address": "carol@hamburger.edu", "status": "sent", "text": "2.0.0 ok"}]}])
    text = out.file.getvalue()
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "Age", "Size", "Sender", "Recipient", "State", "Next", "attempt", "Last", "error"]
    assert lines[1].split()[:7] == ["ABC123", "2h05m", "2.0K", "<>", "bob@hamburger.edu", "deferred", "in"]
    assert "connect to [127.0.0.1]:25 failed: connection refused" in lines[1]  # brackets are not markup
    assert lines[2].split() == ["carol@hamburger.edu", "sent"]
    assert lines[-1] == "-- 2.0K in 1 message"


def test_render_empty_queue():
    out = Console(file=io.StringIO(), width=80)
    render_list(out, [])
    assert out.file.getvalue() == "Mail queue is empty\n"


def cfg_in(path):
    return parse_config("", None, path)


def run_cli(argv, cfg):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv, cfg)
    return rc, out.getvalue(), err.getvalue()


def test_cli_usage_errors(tmp_path):
    cfg = cfg_in(tmp_path)
    rc, _, err = run_cli(["delete"], cfg)
    assert rc == 2 and "id" in err
    rc, _, err = run_cli(["frobnicate"], cfg)
    assert rc == 2


def test_cli_refuses_clearly_without_a_relay(tmp_path):
    cfg = cfg_in(tmp_path)
    rc, out, err = run_cli(["flush"], cfg)
    assert rc == 3 and out == ""
    assert "the relay is not running" in err and str(cfg.control_socket) in err


@pytest.fixture
async def control(tmp_path):
    calls = []

    async def echo(req):
        calls.append(req)
        return {"you_sent": req}

    async def refuse(req):
        raise ControlError("no message XYZ in the queue")

    async def crash(req):
        raise ZeroDivisionError("boom")

    # a deep directory, beyond the 107-byte limit of a Unix socket path
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = ControlServer(deep / "control.sock", {"echo": echo, "refuse": refuse, "crash": crash})
    await server.start()
    server.calls = calls
    yield server
    await server.close()


async def test_control_round_trip_on_a_long_path(control):
    assert len(os.fsencode(control.path)) > 107
    assert (control.path.stat().st_mode & 0o777) == 0o600
    got = await asyncio.to_thread(request, control.path, "echo", id="Q1", extra=[1, 2])
    assert got == {"you_sent": {"cmd": "echo", "id": "Q1", "extra": [1, 2]}}
    assert (await asyncio.to_thread(request, control.path, "ping"))["pid"] == os.getpid()


async def test_control_errors_reach_the_client(control):
    with pytest.raises(ControlError, match="no message XYZ"):
        await asyncio.to_thread(request, control.path, "refuse")
    with pytest.raises(ControlError, match="internal error: ZeroDivisionError"):
        await asyncio.to_thread(request, control.path, "crash")
    with pytest.raises(ControlError, match="unknown command 'nope'"):
        await asyncio.to_thread(request, control.path, "nope")


async def test_control_survives_garbage_and_serves_several_lines(control):
    def raw_session() -> list[dict]:
        with socket.socket(socket.AF_UNIX) as s:
            with _socket_address(control.path) as addr:
                s.connect(addr)
            s.sendall(b"not json\n[1,2]\n" + json.dumps({"cmd": "echo", "n": 1}).encode() + b"\n")
            buf = b""
            while buf.count(b"\n") < 3:
                buf += s.recv(4096)
            return [json.loads(line) for line in buf.splitlines()]

    first, second, third = await asyncio.to_thread(raw_session)
    assert not first["ok"] and "JSON object" in first["error"]
    assert not second["ok"]
    assert third == {"ok": True, "result": {"you_sent": {"cmd": "echo", "n": 1}}}


async def test_second_server_on_the_same_socket_is_refused(control):
    other = ControlServer(control.path, {})
    with pytest.raises(RelayError, match="already running"):
        await other.start()


async def test_stale_socket_is_replaced(tmp_path):
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX) as s:  # a relay that died without cleaning up
        s.bind(str(path))
    async with ControlServer(path, {}) as server:
        assert (await asyncio.to_thread(request, server.path, "ping"))["pid"] == os.getpid()
    assert not path.exists()
    with pytest.raises(NotRunning):
        request(path, "ping")


async def test_regular_file_in_the_way_is_not_removed(tmp_path):
    path = tmp_path / "control.sock"
    path.write_text("precious")
    with pytest.raises(RelayError, match="not a socket"):
        await ControlServer(path, {}).start()
    assert path.read_text() == "precious"
