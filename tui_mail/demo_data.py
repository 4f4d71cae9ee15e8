"""Sample mail for `tui-mail demo`: realistic, deterministic, pure (no I/O).

Everything is built with the stdlib ``email`` package and ``policy.SMTP`` so the bytes are
what a real user agent would send (CRLF, encoded words, MIME). The same seed gives the same
messages, so screenshots and tests are reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

ALICE = ("Alice Crêpe", "alice@crepes.fr")
BOB = ("Bob Hamburger", "bob@hamburger.edu")
CAROL = ("Carol Moules", "carol@crepes.fr")


def _addr(person: tuple[str, str]) -> str:
    from email.headerregistry import Address

    name, email = person
    local, domain = email.split("@")
    return str(Address(name, local, domain))


def _message(sender, to, subject, body, date, *, msgid=None, in_reply_to=None, references=(),
             cc=(), html=None, attachments=()) -> tuple[str, bytes]:
    m = EmailMessage(policy=SMTP)
    m["From"] = _addr(sender)
    m["To"] = ", ".join(_addr(p) for p in to)
    if cc:
        m["Cc"] = ", ".join(_addr(p) for p in cc)
    m["Subject"] = subject
    m["Date"] = format_datetime(date)
    msgid = msgid or make_msgid(domain=sender[1].split("@")[1])
    m["Message-ID"] = msgid
    if in_reply_to:
        m["In-Reply-To"] = in_reply_to
    if references:
        m["References"] = " ".join(references)
    m["MIME-Version"] = "1.0"
    m.set_content(body)
    if html is not None:
        m.add_alternative(html, subtype="html")
    for filename, maintype, subtype, data in attachments:
        m.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msgid, m.as_bytes()


def classic_thread(now: datetime) -> list[tuple[str, bytes]]:
    """The textbook exchange plus replies: alice → bob "Do you like ketchup?" and on."""
    t0 = now - timedelta(days=2, hours=3)
    first_id, first = _message(
        ALICE, [BOB], "Do you like ketchup?",
        "Hi Bob,\n\nDo you like ketchup?\nHow about pickles?\n\nAlice\n", t0,
        msgid="<ketchup.1@crepes.fr>")
    r1_id, r1 = _message(
        BOB, [ALICE], "Re: Do you like ketchup?",
        "On the burger, yes. Pickles too, sliced thin.\n\n> Do you like ketchup?\n> How about pickles?\n\nBob\n",
        t0 + timedelta(hours=2), msgid="<ketchup.2@hamburger.edu>",
        in_reply_to=first_id, references=(first_id,))
    r2_id, r2 = _message(
        ALICE, [BOB], "Re: Do you like ketchup?",
        "Thin pickles, noted. And mustard?\n\n> On the burger, yes. Pickles too, sliced thin.\n\nAlice\n",
        t0 + timedelta(hours=5), msgid="<ketchup.3@crepes.fr>",
        in_reply_to=r1_id, references=(first_id, r1_id))
    r3_id, r3 = _message(
        BOB, [ALICE], "Re: Do you like ketchup?",
        "Mustard only on Fridays.\n\nBob\n", t0 + timedelta(days=1),
        msgid="<ketchup.4@hamburger.edu>", in_reply_to=r2_id, references=(first_id, r1_id, r2_id))
    return [(first_id, first), (r1_id, r1), (r2_id, r2), (r3_id, r3)]


def newsletter(now: datetime) -> bytes:
    html = """<html><body>
<h1>The Crêpe Gazette — November</h1>
<p>This month: <b>buckwheat galettes</b>, the perfect <i>caramel au beurre salé</i>,
and a visit to the <a href="https://example.org/market">Saturday market</a>.</p>
<ul><li>Recipe: galette complète</li><li>Interview: a crêpier in Rennes</li></ul>
<p><a href="https://example.org/unsubscribe">Unsubscribe</a></p>
</body></html>"""
    text = ("The Crêpe Gazette — November\n\nThis month: buckwheat galettes, the perfect caramel au "
            "beurre salé, and a visit to the Saturday market (https://example.org/market).\n")
    _, data = _message(("The Crêpe Gazette", "news@crepes.fr"), [ALICE], "The Crêpe Gazette — November",
                       text, now - timedelta(hours=20), html=html)
    return data


def with_attachment(now: datetime) -> bytes:
    recipe = ("Galette complète\n================\n\n- 250 g buckwheat flour\n- 1 egg\n- 50 cl water\n"
              "- salt\n\nRest the batter two hours. Ham, egg and Emmental on top.\n").encode()
    csv = b"item,qty\nflour,250g\negg,1\nwater,50cl\n"
    _, data = _message(CAROL, [ALICE], "Recipe for Saturday", "Here it is, and the shopping list.\n\nCarol\n",
                       now - timedelta(hours=6),
                       attachments=[("galette.txt", "text", "plain", recipe),
                                    ("shopping-list.csv", "text", "csv", csv)])
    return data


def non_ascii(now: datetime) -> bytes:
    _, data = _message(("Zoë Ångström", "zoe@hamburger.edu"), [ALICE], "Grüße aus Köln — Ça va? 🍔",
                       "Hallo Alice,\n\nschöne Grüße! Ça va bien? Das Wetter ist gut, 寿司 war lecker.\n\nZoë\n",
                       now - timedelta(hours=1, minutes=12))
    return data


_WORDS = ("ketchup pickles mustard burger crêpe galette market recipe lunch dinner meeting report "
          "invoice travel train ticket weekend project review draft notes photos garden bike").split()
_PEOPLE = [("Dana Waffle", "dana@crepes.fr"), ("Eve Pretzel", "eve@hamburger.edu"),
           ("Frank Bagel", "frank@hamburger.edu"), ("Grace Brioche", "grace@crepes.fr"),
           ("Heidi Strudel", "heidi@hamburger.edu"), CAROL]


def bulk(count: int, now: datetime, to=ALICE, seed: int = 7) -> Iterator[bytes]:
    """``count`` plain messages spread over the past year: the big folder of the demo."""
    rng = random.Random(seed)
    start = now - timedelta(days=365)
    step = timedelta(days=365) / max(count, 1)
    for i in range(count):
        sender = rng.choice(_PEOPLE)
        words = rng.sample(_WORDS, 3)
        subject = f"{words[0].capitalize()} {words[1]} #{i + 1}"
        body = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(20, 80))) + "\n"
        date = start + step * i + timedelta(minutes=rng.randint(0, 59))
        _, data = _message(sender, [to], subject, body, date,
                           msgid=f"<bulk.{seed}.{i}@{sender[1].split('@')[1]}>")
        yield data


def alice_inbox(now: datetime | None = None) -> list[bytes]:
    now = now or datetime.now(timezone.utc)
    thread = classic_thread(now)
    # alice's INBOX has bob's replies; her own messages are in Sent
    return [thread[1][1], thread[3][1], newsletter(now), with_attachment(now), non_ascii(now)]


def alice_sent(now: datetime | None = None) -> list[bytes]:
    now = now or datetime.now(timezone.utc)
    thread = classic_thread(now)
    return [thread[0][1], thread[2][1]]


def bob_inbox(now: datetime | None = None) -> list[bytes]:
    now = now or datetime.now(timezone.utc)
    thread = classic_thread(now)
    return [thread[0][1], thread[2][1]]
