import email
from datetime import datetime, timezone
from email.policy import default

from tui_mail import demo_data

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def parse(b):
    return email.message_from_bytes(b, policy=default)


def test_classic_thread_is_a_real_thread():
    msgs = [parse(b) for _, b in demo_data.classic_thread(NOW)]
    assert msgs[0]["Subject"] == "Do you like ketchup?"
    assert "How about pickles?" in msgs[0].get_content()
    for prev, cur in zip(msgs, msgs[1:]):
        assert cur["In-Reply-To"] == prev["Message-ID"]
        assert prev["Message-ID"] in cur["References"]


def test_messages_are_wire_format():
    every = demo_data.alice_inbox(NOW) + demo_data.alice_sent(NOW) + list(demo_data.bulk(20, NOW))
    for b in every:
        assert b"\r\n" in b and b.replace(b"\r\n", b"").count(b"\n") == 0  # CRLF only
        assert all(len(line) <= 998 for line in b.split(b"\r\n"))
        m = parse(b)
        for h in ("From", "To", "Date", "Message-ID", "MIME-Version"):
            assert m[h], h


def test_rich_samples():
    inbox = [parse(b) for b in demo_data.alice_inbox(NOW)]
    subjects = [m["Subject"] for m in inbox]
    assert "Grüße aus Köln — Ça va? 🍔" in subjects
    news = next(m for m in inbox if "Gazette" in m["Subject"])
    assert news.get_body(("html",)) is not None
    att = next(m for m in inbox if m["Subject"] == "Recipe for Saturday")
    assert [p.get_filename() for p in att.iter_attachments()] == ["galette.txt", "shopping-list.csv"]


def test_bulk_is_deterministic_and_dated_in_order():
    a = list(demo_data.bulk(50, NOW))
    assert a == list(demo_data.bulk(50, NOW))
    dates = [email.utils.parsedate_to_datetime(parse(b)["Date"]) for b in a]
    assert dates == sorted(dates) and dates[-1] <= NOW
