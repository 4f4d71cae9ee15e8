"""Contacts ranking, vCard and address-book-command parsing, notification escapes (pure), and
the address book's I/O against real files and a real command (no shell)."""

from __future__ import annotations

import sys
import textwrap

from tui_mail.address_book import AddressBook
from tui_mail.mail.contacts import (Contact, Seen, matches, observations, parse_command_output,
                                    parse_vcards, rank)
from tui_mail.ui.notify import command_argv, osc_sequence, safe_field, terminal_kind

DAY = 86400.0
NOW = 1_800_000_000.0


def test_rank_prefers_people_written_to_and_recent_ones():
    seen = [
        Seen("often@x.org", "Often", NOW - 200 * DAY, False),
        Seen("often@x.org", "Often", NOW - 210 * DAY, False),
        Seen("often@x.org", "Often", NOW - 220 * DAY, False),
        Seen("recent@x.org", "Recent", NOW - 1 * DAY, False),
        Seen("friend@x.org", "Friend", NOW - 30 * DAY, True),        # we wrote to them
        Seen("me@x.org", "Me", NOW, True),
    ]
    ranked = rank(seen, NOW, own=["Me@X.org"])
    assert [c.address for c in ranked] == ["friend@x.org", "recent@x.org", "often@x.org"]
    assert all(c.address != "me@x.org" for c in ranked)


def test_rank_merges_case_and_keeps_the_latest_name_and_drops_junk():
    seen = [Seen("Ann@X.org", "Ann Old", NOW - 10 * DAY, False),
            Seen("ann@x.org", "Ann New", NOW - DAY, False),
            Seen("not an address", "Bad", NOW, False),
            Seen("evil@x.org", "Evil\x1b]0;pwned\x07 Name", NOW, False)]
    ranked = {c.address.lower(): c for c in rank(seen, NOW)}
    assert set(ranked) == {"ann@x.org", "evil@x.org"}
    assert ranked["ann@x.org"].name == "Ann New"
    assert "\x1b" not in ranked["evil@x.org"].name and "\x07" not in ranked["evil@x.org"].name


def test_observations_take_recipients_of_sent_mail_and_the_sender_of_received():
    sent = observations("Me", "me@x.org", "Bob <bob@x.org>, carol@x.org", "Dan <dan@x.org>", NOW, True)
    assert [(s.address, s.name, s.sent) for s in sent] == [
        ("bob@x.org", "Bob", True), ("carol@x.org", "", True), ("dan@x.org", "Dan", True)]
    got = observations("Eve", "eve@x.org", "me@x.org", "", NOW, False)
    assert [(s.address, s.name, s.sent) for s in got] == [("eve@x.org", "Eve", False)]


def test_matches_by_address_name_or_word_and_entry_quotes_special_names():
    contacts = [Contact("carol@x.org", "Carol Smith"), Contact("bob@y.org", "Robert, Jr.")]
    assert [c.address for c in matches(contacts, "smi")] == ["carol@x.org"]
    assert [c.address for c in matches(contacts, "bob")] == ["bob@y.org"]
    assert matches(contacts, " ") == []
    assert contacts[0].entry == "Carol Smith <carol@x.org>"
    assert contacts[1].entry == '"Robert, Jr." <bob@y.org>'


def test_command_output_follows_aercs_convention():
    out = "carol@x.org\tCarol Smith\textra\nnot-an-address\tX\n\nbob@y.org\n\x1b[31mevil@z.org\tE\n"
    got = parse_command_output(out)
    assert [(c.address, c.name, c.source) for c in got] == [
        ("carol@x.org", "Carol Smith", "command"), ("bob@y.org", "", "command")]


VCARDS = textwrap.dedent("""\
    BEGIN:VCARD
    VERSION:3.0
    FN:Carol Smith
    N:Smith;Carol;;;
    EMAIL;TYPE=work:carol@work.example
    EMAIL;TYPE=home:carol@home.example
    END:VCARD
    BEGIN:VCARD
    VERSION:4.0
    FN:Dan
    EMAIL:dan@x.org
    END:VCARD
    """)


def test_vcards_give_every_email_with_the_full_name():
    got = parse_vcards(VCARDS)
    assert [(c.address, c.name, c.source) for c in got] == [
        ("carol@work.example", "Carol Smith", "vcard"), ("carol@home.example", "Carol Smith", "vcard"),
        ("dan@x.org", "Dan", "vcard")]
    assert parse_vcards("BEGIN:VCARD\nthis is not a card\n") == []
    assert parse_vcards("") == []


def test_address_book_reads_a_vcard_dir_and_runs_the_command_without_a_shell(tmp_path):
    cards = tmp_path / "contacts"
    cards.mkdir()
    (cards / "carol.vcf").write_text(VCARDS)
    (cards / "huge.vcf").write_bytes(b"BEGIN:VCARD\nFN:X\nEMAIL:x@x.org\nEND:VCARD\n" + b" " * (2 << 20))
    (cards / "notes.txt").write_text("EMAIL:ignored@x.org")
    script = tmp_path / "book.py"
    log = tmp_path / "argv.txt"
    script.write_text(textwrap.dedent(f"""\
        import sys
        open({str(log)!r}, "w").write(repr(sys.argv[1:]))
        print("erin@x.org\\tErin Example")
        print("carol@work.example\\tCarol From Command")
        """))
    book = AddressBook(tmp_path / "cache" / "contacts.sqlite",
                       command=f"{sys.executable} {script} --query", vcard_dir=cards)
    query = "er; touch $(echo pwned) `id`"
    found = book.lookup(query)
    assert eval(log.read_text()) == ["--query", query]         # one argv element, no shell
    assert not (tmp_path / "pwned").exists()
    assert [c.address for c in found] == ["erin@x.org", "carol@work.example"]
    assert [c.address for c in book.vcards()] == ["carol@work.example", "carol@home.example", "dan@x.org"]
    assert [c.address for c in book.lookup("carol", command=False)] == ["carol@work.example", "carol@home.example"]


def test_address_book_index_survives_a_restart(tmp_path):
    path = tmp_path / "cache" / "contacts.sqlite"
    book = AddressBook(path, own=["me@x.org"])
    book.rebuild([Seen("bob@x.org", "Bob", NOW, True), Seen("amy@x.org", "Amy", NOW - 400 * DAY, False)], now=NOW)
    assert (path.stat().st_mode & 0o777) == 0o600
    again = AddressBook(path)
    assert [c.address for c in again.load()] == ["bob@x.org", "amy@x.org"]
    assert again.entries() == ["Bob <bob@x.org>", "Amy <amy@x.org>"]


def test_a_failing_or_missing_command_gives_no_contacts(tmp_path):
    assert AddressBook(command="/nonexistent/address-book").run_command("bob") == []
    assert AddressBook(command=f"{sys.executable} -c 'import sys; sys.exit(3)'").run_command("bob") == []


def test_notify_argv_keeps_hostile_text_as_single_arguments():
    argv = command_argv("notify-send -a 'tui mail'", "Mallory $(reboot)", "Hi\x1b]0;x\x07; rm -rf ~\n")
    assert argv == ["notify-send", "-a", "tui mail", "Mallory $(reboot)", "Hi ]0;x ; rm -rf ~"]


def test_osc_sequences_cannot_be_ended_or_extended_by_the_sender():
    seq = osc_sequence("osc777", "Eve;x", "Sub\x07ject\x1b\\;y\x9c")
    assert seq.startswith("\x1b]777;notify;Eve,x;") and seq.endswith("\x1b\\")
    inner = seq[len("\x1b]777;notify;"):-2]
    assert "\x1b" not in inner and "\x07" not in inner and "\x9c" not in inner and inner.count(";") == 1
    assert osc_sequence("osc9", "Bob", "Lunch") == "\x1b]9;Bob: Lunch\x1b\\"
    wrapped = osc_sequence("osc9", "Bob", "Lunch", in_tmux=True)
    assert wrapped == "\x1bPtmux;\x1b\x1b]9;Bob: Lunch\x1b\x1b\\\x1b\\"
    assert len(safe_field("x" * 1000)) == 120


def test_terminal_kind_auto_only_for_terminals_known_to_show_it():
    assert terminal_kind("auto", {"TERM_PROGRAM": "WezTerm"}) == "osc9"
    assert terminal_kind("auto", {"TERM": "foot"}) == "osc777"
    assert terminal_kind("auto", {"TERM": "xterm-256color"}) is None
    assert terminal_kind("off", {"TERM_PROGRAM": "WezTerm"}) is None
    assert terminal_kind("osc777", {}) == "osc777"
