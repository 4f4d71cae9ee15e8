from pathlib import Path

import pytest

from relay.config import Address, load_config, parse_config, parse_duration, DEFAULT_TOML
from relay.errors import ConfigError


def test_defaults_when_no_file(tmp_path):
    cfg = load_config(data_dir=tmp_path)
    assert cfg.listen.smtp == Address("127.0.0.1", 2525)
    assert cfg.listen.submission == Address("127.0.0.1", 2587)
    assert cfg.listen.imap == Address("127.0.0.1", 1143)
    assert cfg.listen.pop3 == Address("127.0.0.1", 1110)
    assert cfg.queue.retry_interval == 1800 and cfg.queue.max_lifetime == 5 * 86400
    assert cfg.queue.max_message_size == 25 * 1024 * 1024 and cfg.queue.max_hops == 50
    assert cfg.data_dir == tmp_path


def test_default_toml_is_the_defaults(tmp_path):
    assert parse_config(DEFAULT_TOML, None, tmp_path) == load_config(data_dir=tmp_path)


def test_full_file(tmp_path):
    text = """
hostname = "crepes.fr"
domains = ["crepes.fr", "Example.ORG."]
[listen]
smtp = "127.0.0.1:0"
imap = ""
[queue]
retry_interval = "5m"
max_lifetime = 3600
[routes]
"hamburger.edu" = "127.0.0.1:2526"
"x.org" = { host = "mx.x.org", port = 25, require_tls = true }
[dns]
nameservers = ["127.0.0.1:5353", "10.0.0.1"]
[smarthost]
host = "smtp.example.com"
password = "hunter2"
"""
    p = tmp_path / "relay.toml"
    p.write_text(text)
    cfg = load_config(p, data_dir=tmp_path / "d")
    assert cfg.domains == ("crepes.fr", "example.org")
    assert cfg.is_local_domain("CREPES.FR")
    assert cfg.listen.imap is None and cfg.listen.smtp.port == 0
    assert cfg.queue.retry_interval == 300 and cfg.queue.max_lifetime == 3600
    assert cfg.routes["hamburger.edu"].port == 2526
    assert cfg.routes["x.org"].require_tls
    assert [str(a) for a in cfg.dns.nameservers] == ["127.0.0.1:5353", "10.0.0.1:53"]
    assert "hunter2" not in repr(cfg)


@pytest.mark.parametrize("text, key, line, words", [
    ('hostname = "a"\n[queue]\nretry_interval = "soon"\n', "queue.retry_interval", 3, "duration"),
    ('[listen]\nsmtp = "nowhere"\n', "listen.smtp", 2, "host:port"),
    ('domains = "crepes.fr"\n', "domains", 1, "list"),
    ('[queue]\nmax_hops = 0\n', "queue.max_hops", 2, "between 1 and 1000"),
    ('colour = "blue"\n', "colour", 1, "unknown key"),
    ('[routes]\n"a.b" = 7\n', "routes.a.b", None, "host:port"),
])
def test_bad_values_name_file_line_key(tmp_path, text, key, line, words):
    p = tmp_path / "relay.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(p, data_dir=tmp_path)
    e = ei.value
    assert e.key == key
    if line:
        assert e.line == line
    assert words in str(e)
    assert str(p) in str(e)


def test_syntax_error_names_line(tmp_path):
    p = tmp_path / "relay.toml"
    p.write_text('hostname = "a"\n\n[queue\n')
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert ei.value.line == 3 and "TOML" in str(ei.value)


def test_missing_explicit_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize("v, s", [("30m", 1800), ("5d", 432000), ("4h", 14400), ("90", 90), (12, 12), ("1.5s", 1.5)])
def test_durations(v, s):
    assert parse_duration(v) == s


@pytest.mark.parametrize("v", ["soon", -1, True, "5 years"])
def test_bad_durations(v):
    assert parse_duration(v) is None
