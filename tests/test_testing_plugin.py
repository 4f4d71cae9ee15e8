"""tui_mail.testing: the ``mail_sink`` fixture as an application's test suite uses it, run
in a real inner pytest (pytester) with ``-p tui_mail.testing``."""

from __future__ import annotations

pytest_plugins = ["pytester"]

APP_TEST = '''
import smtplib
from email.message import EmailMessage

import pytest


def signup(smtp, address):
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "noreply@myapp.test", address, "Welcome!"
    msg.set_content("Confirm your address: https://myapp.test/c/123")
    with smtplib.SMTP(*smtp) as s:
        s.send_message(msg)


def test_signup_sends_welcome(mail_sink):
    signup(mail_sink.smtp, "bob@example.com")
    msg = mail_sink.wait_for("to:bob@example.com subject:welcome", timeout=5)
    assert "https://myapp.test/c/123" in msg["Text"]
    assert msg["EnvelopeTo"] == ["bob@example.com"]
    assert [m["Subject"] for m in mail_sink.messages()] == ["Welcome!"]


def test_nothing_sent_fails_clearly(mail_sink):
    with pytest.raises(AssertionError, match="no mail matching 'to:carol'"):
        mail_sink.wait_for("to:carol", timeout=0.2)
    assert mail_sink.clear() == 0
'''


def test_mail_sink_fixture_in_an_application_suite(pytester):
    pytester.makepyfile(test_app=APP_TEST)
    result = pytester.runpytest_subprocess("-p", "tui_mail.testing", "-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
