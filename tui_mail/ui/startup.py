"""The cyclic garbage collector is held off from interpreter start to the first screen.

Start-up allocates a few hundred thousand long-lived objects (modules, classes, Textual's
styles and strips): the collector ran ~125 times before the first frame, one full collection
alone ~20 ms, ~40 ms CPU in all (measured with gc.callbacks on the 100k-message bench), and
found next to nothing to free. ``hold()`` (tui_mail.ui.run, the real command only) disables
it; ``release()`` — once the first rows are painted, or a second after start at the latest —
moves what exists into the permanent generation (``gc.freeze``: never scanned again) and
turns the collector back on.
"""

from __future__ import annotations

import gc

RELEASE_AFTER = 1.0       # seconds after the app is mounted, if no rows were painted by then
_held = False


def hold() -> None:
    global _held
    if gc.isenabled():
        gc.disable()
        _held = True


def release() -> None:
    global _held
    if _held:
        _held = False
        gc.freeze()
        gc.enable()
