"""Type-ahead that keeps its order: every key goes to the widget that has focus after the keys
before it were handled.

Why this exists: Textual forwards a key to the focused widget's own message queue and goes on
with the next key at once. Whatever a key does to focus happens later: a binding such as Tab
(``focus_next``) runs only when the key has bubbled back up to the App, ``Widget.focus()``
lands through ``App.call_later``, and a pushed screen composes and focuses its first field in
its own task. So the keys of one burst (a paste, tmux ``send-keys``, a fast typist) reached the
widget that had focus *before* the burst: ``To: bob@hamburger.educc@x.orgSubjectBody``, and
after ``c`` (compose) the whole burst fell on the main screen, where letters are commands.

The fix is at that mechanism, for every screen: a key (or paste) is dispatched the ordinary
Textual way, and the next one waits in a backlog until the app has *settled*: every message
queue the key travels through (the App, the top screen, the focused widget and its ancestors)
has processed what the key set off (rounds of ``call_later`` callbacks, the technique Textual's
own Pilot uses between keys, repeated until a round leaves those queues empty and the focus where
it was), the top screen is mounted, and no ``hold_keys()`` is open.
An action that opens a screen from a worker (reply fetches the message first) holds the keys
until that screen is up, so type-ahead after ``r`` lands in the reply, as in mutt.

Bounded: a settle gives up after ``SETTLE_LIMIT`` seconds and a hold after ``HOLD_LIMIT``, so a
busy or broken widget can slow input down but never swallow or freeze it. Keys are never
dropped and never reordered.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from textual import events
from textual.message_pump import MessagePump

SETTLE_LIMIT = 2.0     # seconds one key may take to settle before the next goes anyway
HOLD_LIMIT = 10.0      # seconds a hold_keys() may keep keys back
MAX_ROUNDS = 64
# Actions that move a cursor or scroll inside the focused widget and never touch the focus or
# the screen stack: their keys need not wait for the app to settle (auto-repeat j stays fast).
FOCUS_NEUTRAL = frozenset({
    "cursor_down", "cursor_up", "cursor_top", "cursor_bottom", "page_down", "page_up",
    "scroll_down", "scroll_up", "scroll_home", "scroll_end", "scroll(1)", "scroll(-1)", "page",
    "toggle_select", "toggle_flag", "toggle_read", "log_scroll(1)", "log_scroll(-1)", "log_end",
})


@dataclass
class _KeyGate:
    backlog: deque[events.Event] = field(default_factory=deque)
    busy: bool = False
    feeder: asyncio.Task | None = None
    holds: set[object] = field(default_factory=set)
    hold_changed: asyncio.Event | None = None
    dispatched: asyncio.Event | None = None
    keys_dispatched: int = 0


def _is_input(event: events.Event) -> bool:
    return isinstance(event, (events.Key, events.Paste)) and not event.is_forwarded


def _copy(event: events.Event) -> events.Event:
    if isinstance(event, events.Key):
        fresh: events.Event = events.Key(event.key, event.character)
    else:
        fresh = events.Paste(event.text)  # type: ignore[attr-defined]
    fresh._tui_released = True  # type: ignore[attr-defined]
    return fresh


def _quiet(pump: MessagePump, app: MessagePump) -> bool:
    """Nothing left to do in ``pump``'s queue (for the App: nothing but unreleased input,
    which is the backlog arriving)."""
    if pump.message_queue_size == 0:
        return True
    if pump is not app:
        return False
    queued = getattr(pump._message_queue, "_queue", None)
    if queued is None:
        return False
    return all(_is_input(m) and not getattr(m, "_tui_released", False) for m in list(queued))


class OrderedKeys:
    """App mixin (put it before ``App`` in the bases)."""

    @property
    def _key_gate(self) -> _KeyGate:
        gate = self.__dict__.get("_tui_key_gate")
        if gate is None:
            gate = self.__dict__["_tui_key_gate"] = _KeyGate()
        return gate

    # --- holds: an action that opens a screen later keeps the keys until then --------------
    def hold_keys(self, reason: str = "") -> object:
        """Keep typed keys back until ``release_keys(token)`` (or ``HOLD_LIMIT``)."""
        token = object()
        gate = self._key_gate
        gate.holds.add(token)
        return token

    def release_keys(self, token: object | None) -> None:
        gate = self._key_gate
        if token is None or token not in gate.holds:
            return
        gate.holds.discard(token)
        if gate.hold_changed is not None:
            gate.hold_changed.set()
        if not gate.holds and gate.backlog:
            self._ensure_feeder()

    @property
    def keys_pending(self) -> int:
        """Keys typed but not yet handed to a widget (tests and the bench read this)."""
        gate = self._key_gate
        return len(gate.backlog) + (1 if gate.busy else 0)

    async def keys_settled(self, timeout: float = 10.0) -> None:
        """Wait until every typed key was handled and the app settled (for tests)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await asyncio.sleep(0.01)
            queued = getattr(self._message_queue, "_queue", ())  # type: ignore[attr-defined]
            if not self.keys_pending and not any(_is_input(m) for m in list(queued)):
                return

    # --- dispatch -------------------------------------------------------------------------
    async def on_event(self, event: events.Event) -> None:
        if not _is_input(event):
            await super().on_event(event)  # type: ignore[misc]
            return
        gate = self._key_gate
        if getattr(event, "_tui_released", False):
            try:
                await super().on_event(event)  # type: ignore[misc]
            finally:
                gate.keys_dispatched += 1
                if gate.dispatched is not None:
                    gate.dispatched.set()
            return
        if gate.busy or gate.backlog or gate.holds:
            gate.backlog.append(event)
            self._ensure_feeder()
            return
        if self._types_text(event):        # cannot move the focus: the next key need not wait
            gate.keys_dispatched += 1
            await super().on_event(event)  # type: ignore[misc]
            return
        gate.busy = True
        gate.keys_dispatched += 1
        try:
            await super().on_event(event)  # type: ignore[misc]
        finally:
            self._ensure_feeder()

    def _types_text(self, event: events.Event) -> bool:
        """A printable key or a paste going into a text field (the field takes it and stops
        it), or a key bound to a cursor move (``_moves_only``): it can change neither focus
        nor screen, so the keys after it go on in order without waiting for the app to settle.
        This keeps typing, pasting and j/k as fast as without the ordering."""
        from textual.widgets import Input, TextArea

        focused = self.focused  # type: ignore[attr-defined]
        if focused is None or focused.disabled:
            return False
        if isinstance(focused, TextArea):
            takes = not focused.read_only
        else:
            takes = isinstance(focused, Input)
        if takes:
            return isinstance(event, events.Paste) or (isinstance(event, events.Key) and event.is_printable)
        return isinstance(event, events.Key) and self._moves_only(event.key)

    def _moves_only(self, key: str) -> bool:
        """The key's binding (the one Textual would run) only moves a cursor or toggles a flag
        in the focused widget (j/k/g/G/Space…): it cannot move the focus either."""
        try:
            chain = self.screen._modal_binding_chain  # type: ignore[attr-defined]
        except Exception:
            return False
        for _namespace, bindings in chain:
            for binding in bindings.key_to_bindings.get(key, ()):
                if not binding.priority:
                    return binding.action in FOCUS_NEUTRAL
        return False

    def _ensure_feeder(self) -> None:
        gate = self._key_gate
        if gate.feeder is not None and not gate.feeder.done():
            return
        gate.busy = True
        gate.feeder = asyncio.get_running_loop().create_task(self._feed(), name="ordered keys")

    async def _feed(self) -> None:
        gate = self._key_gate
        loop = asyncio.get_running_loop()
        settle = True
        try:
            while True:
                if settle:
                    await self._settle()
                if not gate.backlog:
                    return
                event = gate.backlog.popleft()
                settle = not (not gate.holds and self._types_text(event))
                gate.dispatched = asyncio.Event()
                if not self.post_message(_copy(event)):  # type: ignore[attr-defined]
                    gate.backlog.clear()                  # the app is closing
                    return
                try:
                    await asyncio.wait_for(gate.dispatched.wait(), SETTLE_LIMIT)
                except asyncio.TimeoutError:
                    pass
                if loop.is_closed():
                    return
        except asyncio.CancelledError:
            raise
        except Exception as error:  # never leave the keyboard dead
            self.log(f"ordered keys: {error!r}")  # type: ignore[attr-defined]
            while gate.backlog:
                self.post_message(_copy(gate.backlog.popleft()))  # type: ignore[attr-defined]
        finally:
            gate.busy = False
            gate.dispatched = None
            if gate.feeder is asyncio.current_task():
                gate.feeder = None

    async def _wait_for_holds(self, loop: asyncio.AbstractEventLoop) -> None:
        gate = self._key_gate
        deadline = loop.time() + HOLD_LIMIT
        while gate.holds:
            remaining = deadline - loop.time()
            if remaining <= 0:
                gate.holds.clear()   # a hold nobody released: give the keyboard back
                return
            gate.hold_changed = asyncio.Event()
            try:
                await asyncio.wait_for(gate.hold_changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def _settle(self) -> None:
        """Return once the App and the top screen have handled everything already queued."""
        loop = asyncio.get_running_loop()
        await self._wait_for_holds(loop)
        deadline = loop.time() + SETTLE_LIMIT
        app = self  # type: ignore[assignment]
        for _ in range(MAX_ROUNDS):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                screen = app.screen  # type: ignore[attr-defined]
            except Exception:
                return
            if not screen.is_mounted:
                try:
                    await asyncio.wait_for(screen._mounted_event.wait(), remaining)
                except asyncio.TimeoutError:
                    return
                continue
            pumps = _pumps(app, screen)
            await _round(pumps, remaining)
            if app.screen is screen and screen.focused is pumps[-1] and all(  # type: ignore[attr-defined]
                    _quiet(p, app) for p in _pumps(app, screen)):
                if self._key_gate.holds:
                    await self._wait_for_holds(loop)
                    continue
                return


def _pumps(app, screen) -> list:
    """The queues a key travels through: the App (bindings, ``focus()`` callbacks), the screen
    and the focused widget with its ancestors (the key and what it bubbles up); the focused
    widget last. Other widgets cannot move the focus before the next key is handed out."""
    focused = screen.focused
    if focused is None:
        return [app, screen]
    chain = [node for node in reversed(list(focused.ancestors_with_self)) if node is not app]
    return [app, *chain] if chain and chain[-1] is focused else [app, screen, focused]


async def _round(pumps: Iterable[MessagePump], timeout: float) -> None:
    """Each pump handles what it had queued when this was called."""
    pending = 0
    done = asyncio.Event()

    def tick() -> None:
        nonlocal pending
        pending -= 1
        if pending == 0:
            done.set()

    for pump in pumps:
        if pump.call_later(tick):
            pending += 1
    if pending:
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except asyncio.TimeoutError:
            pass
