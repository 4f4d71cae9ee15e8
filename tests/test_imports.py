"""Package boundaries (DESIGN.md §2): relay never imports tui_mail or textual; the client's
pure layers never import textual. Checked in a fresh interpreter so nothing is pre-imported."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import relay
import tui_mail


def _modules(pkg) -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."))


def _imports_after(modules: list[str]) -> set[str]:
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return {line.split(".")[0] for line in out.split()}


def test_relay_never_imports_client_or_textual():
    loaded = _imports_after(_modules(relay))
    assert "tui_mail" not in loaded
    assert "textual" not in loaded


@pytest.mark.parametrize("sub", ["mail", "store", "send"])
def test_client_core_never_imports_textual(sub):
    pkg = __import__(f"tui_mail.{sub}", fromlist=["_"])
    mods = _modules(pkg) + [pkg.__name__]
    loaded = _imports_after(mods + ["tui_mail.errors"])
    assert "textual" not in loaded
