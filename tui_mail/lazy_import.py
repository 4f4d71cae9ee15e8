"""Modules imported on first use, off the path to the first screen.

``on_first_use("aiosmtplib")`` stands for the module and imports it the first time one of its
attributes is read (also in an ``except mod.Error:`` clause, which is evaluated only when an
exception is on its way). imapclient (~20 ms), aiosmtplib and email.policy (~10 ms each) are
needed to talk to a server or build a message, not to paint a folder from the header cache.

Hand-written: importlib.util.LazyLoader imports the parent package eagerly for a submodule
(``imapclient.exceptions`` would load all of imapclient), and lazy-loader libraries replace
``sys.modules`` entries globally; this is the one small proxy we need.
"""

from __future__ import annotations

import importlib


class on_first_use:   # noqa: N801 - reads like the function it stands in for
    __slots__ = ("_name",)

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<{self._name}, imported on first use>"
