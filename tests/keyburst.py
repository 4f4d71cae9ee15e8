"""Type keys into a running app the way a terminal does: the whole burst at once, no waiting
between keys (Pilot's ``press`` waits for the app after every key, which hid lost keys).

    burst(app, "c", *typed("bob@hamburger.edu"), "tab", *typed("cc@x.org"))
"""

from __future__ import annotations

import unicodedata

from textual import events
from textual.keys import _character_to_key, _get_unicode_name_from_key


def typed(text: str) -> list[tuple[str, str]]:
    """The (key, character) pairs a terminal sends for ``text``, one per character."""
    return [(_character_to_key(c) if not c.isalnum() else c, c) for c in text]


CHARS = {"enter": "\r", "tab": "\t", "escape": "\x1b", "space": " "}


def key_event(key: str | tuple[str, str]) -> events.Key:
    if isinstance(key, tuple):
        return events.Key(*key)
    if key in CHARS:
        return events.Key(key, CHARS[key])
    try:
        char = unicodedata.lookup(_get_unicode_name_from_key(key))
    except KeyError:
        char = key if len(key) == 1 else None
    return events.Key(key, char)


def burst(app, *keys: str | tuple[str, str]) -> None:
    """Queue every key now, as the terminal's input thread does for a fast typist."""
    for key in keys:
        event = key_event(key)
        event.set_sender(app)
        app._driver.send_message(event)


def paste(app, text: str) -> None:
    """A bracketed paste, as the terminal delivers it."""
    event = events.Paste(text)
    event.set_sender(app)
    app._driver.send_message(event)
