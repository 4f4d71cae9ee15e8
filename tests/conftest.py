"""Shared fixtures: every test gets its own XDG dirs and a keyring backend that works
headless, so nothing touches the developer's real config, data, cache or keyring."""

from __future__ import annotations

import os
import socket

import pytest


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"),
                     ("XDG_CACHE_HOME", "cache"), ("XDG_STATE_HOME", "state"),
                     ("XDG_RUNTIME_DIR", "run")):
        d = tmp_path / "xdg" / sub
        d.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(d))
    for var in ("TUI_MAIL_CONFIG", "TUI_MAIL_DATA", "TUI_MAIL_RELAY_CONFIG", "TUI_MAIL_RELAY_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    monkeypatch.setenv("NO_COLOR", "1")
    yield


@pytest.fixture(autouse=True)
def restore_relay_logger():
    """relay.log.setup_logging and the demo configure the "relay" logger (level, handlers,
    propagate=False); put it back so caplog in later tests still sees relay records."""
    import logging

    logger = logging.getLogger("relay")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    yield
    logger.setLevel(saved[0])
    logger.propagate = saved[1]
    for h in list(logger.handlers):
        if h not in saved[2]:
            logger.removeHandler(h)


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (for servers that cannot take port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port_factory():
    return free_port


def pytest_report_header(config):
    return f"CI={os.environ.get('CI', '')}"
