"""The sink's HTTP JSON API on loopback (``listen.http``), shaped after Mailpit's ``/api/v1``.

    GET    /api/v1/messages?query=…&start=0&limit=50   newest first (also /api/v1/search)
    DELETE /api/v1/messages                            all, or {"IDs": ["3", "4"]}
    DELETE /api/v1/search?query=…                      the matching ones
    GET    /api/v1/message/{ID}   (ID may be "latest")  parsed: headers, Text, HTML, Attachments
    GET    /api/v1/message/{ID}/raw | /headers | /part/{PartID} | /attachment/{n}
    DELETE /api/v1/message/{ID}
    GET    /api/v1/wait?query=…&timeout=10&after={ID}  long poll: the first match with ID > after
    GET    /api/v1/openapi.json

aiohttp rather than the standard library: http.server is blocking and thread-per-request,
aiohttp runs in the relay's own event loop next to SMTP/IMAP (the long poll is one
``asyncio.Event`` per waiter, woken from relay/events.py's change bus) and is already a
dependency of textual-serve (``tui-mail web``).

No login: the API binds to loopback only (config refuses anything else) and refuses a
``Host`` header that is not a loopback name (DNS rebinding from a web page). The ``query``
is the client's search language (relay/sink/query.py) run by relay/imap/search.py over the
sink mailbox's own index, so IMAP and HTTP always see the same messages.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from relay.config import Address
from relay.errors import RelayError
from relay.imap.search import BytesTarget, Evaluator, SearchContext, search_mailbox
from relay.sink import SINK_USER, message
from relay.sink.query import QueryError, compile_query

FOLDER = "INBOX"
MAX_LIMIT = 1000
MAX_WAIT = 300.0
FEW = 64                   # new messages matched from their bytes rather than through the index
MAX_WAITERS = 256          # long polls parked at once; more get 503 (each holds a connection)
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def _json(data, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json")


def _error(status: int, text: str) -> web.Response:
    return _json({"error": text}, status)


class SinkAPI:
    def __init__(self, service) -> None:
        self.service = service
        self.bus = service.server.bus
        self.waiters = 0

    # ---- store access (blocking; in threads) --------------------------------------------------

    def _uidnext(self) -> int:
        return self.service.store().status(FOLDER)["UIDNEXT"]

    def _matching(self, query: str, after: int = 0) -> list:
        """Records matching ``query`` (with a UID above ``after``), oldest first. A few new
        messages (the long poll's case) are matched from their bytes; many, through the index."""
        store = self.service.store()
        keys = compile_query(query)
        if after:
            uidnext = self._uidnext()   # syncs
            recs = store.records(FOLDER, range(after + 1, uidnext)) if uidnext > after + 1 else []
            if len(recs) <= FEW:
                ev = Evaluator(keys, SearchContext(len(recs), recs[-1].uid if recs else 0))
                out = []
                for r in recs:
                    try:
                        data = store.read(FOLDER, r.uid, 0, 256 * 1024)
                    except RelayError:   # expunged meanwhile
                        continue
                    target = BytesTarget(data, uid=r.uid, flags=r.flags, internaldate=r.internaldate,
                                         modseq=r.modseq)
                    if ev.matches(1, target):
                        out.append(r)
                return out
        else:
            store.sync(FOLDER)
            recs = store.records(FOLDER)
        if not recs:
            return []
        if keys == [("all",)]:
            return recs
        uids = [r.uid for r in recs]
        hits = search_mailbox(store, FOLDER, uids, keys)
        return [recs[i] for i, _ in hits]

    def _summaries(self, query: str, start: int, limit: int) -> dict:
        store = self.service.store()
        recs = self._matching(query)
        total = len(store.records(FOLDER)) if query else len(recs)
        page = list(reversed(recs))[start:start + limit]
        rows = [message.summary(str(r.uid), store.read(FOLDER, r.uid, 0, 256 * 1024), read="\\Seen" in r.flags,
                                created=r.internaldate.isoformat()) for r in page]
        for row, r in zip(rows, page):
            row["Size"] = r.size
        unread = sum(1 for r in recs if "\\Seen" not in r.flags)
        return {"total": total, "unread": unread, "count": len(rows), "messages_count": len(recs),
                "messages_unread": unread, "start": start, "tags": [], "messages": rows}

    def _record(self, uid: int):
        store = self.service.store()
        store.sync(FOLDER)
        recs = store.records(FOLDER, [uid])
        return recs[0] if recs else None

    def _full(self, uid: int) -> dict | None:
        rec = self._record(uid)
        if rec is None:
            return None
        data = self.service.store().read(FOLDER, uid)
        return message.full(str(uid), data, read="\\Seen" in rec.flags, created=rec.internaldate.isoformat())

    def _delete_matching(self, query: str) -> int:
        return self._delete([r.uid for r in self._matching(query)]) if query.strip() else 0

    def _delete(self, uids: list[int] | None) -> int:
        store = self.service.store()
        store.sync(FOLDER)
        if uids is None:
            uids = [r.uid for r in store.records(FOLDER)]
        return len(store.expunge(FOLDER, sorted(uids), force=True)) if uids else 0

    # ---- handlers ------------------------------------------------------------------------------

    def _latest(self) -> int | None:
        store = self.service.store()
        store.sync(FOLDER)
        recs = store.records(FOLDER)
        return recs[-1].uid if recs else None

    async def _uid(self, request) -> int | None:
        """The {id} of the path: a UID, or ``latest`` (Mailpit's alias for the newest)."""
        text = request.match_info.get("id", "")
        if text == "latest":
            return await asyncio.to_thread(self._latest)
        return int(text) if text.isdigit() and len(text) < 10 else None

    async def list(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            start = max(0, int(q.get("start", "0")))
            limit = min(MAX_LIMIT, max(1, int(q.get("limit", "50"))))
        except ValueError:
            return _error(400, "start and limit must be whole numbers")
        try:
            return _json(await asyncio.to_thread(self._summaries, q.get("query", ""), start, limit))
        except QueryError as e:
            return _error(400, str(e))

    async def delete_many(self, request: web.Request) -> web.Response:
        uids = None
        if request.can_read_body:
            try:
                body = json.loads(await request.content.read(1 << 20) or b"{}")
                ids = body.get("IDs") if isinstance(body, dict) else None
            except ValueError:
                return _error(400, "the body must be JSON like {\"IDs\": [\"1\"]}")
            if ids:
                if not all(isinstance(i, str) and i.isdigit() and len(i) < 10 for i in ids):
                    return _error(400, "IDs must be message IDs")
                uids = [int(i) for i in ids]
        n = await asyncio.to_thread(self._delete, uids)
        return _json({"deleted": n})

    async def delete_search(self, request: web.Request) -> web.Response:
        """Mailpit's DELETE /api/v1/search?query=…: the messages matching a (non-empty) query."""
        query = request.query.get("query", "")
        if not query.strip():
            return _error(400, "a query is required (DELETE /api/v1/messages deletes all)")
        try:
            return _json({"deleted": await asyncio.to_thread(self._delete_matching, query)})
        except QueryError as e:
            return _error(400, str(e))

    async def one(self, request: web.Request) -> web.Response:
        uid = await self._uid(request)
        full = await asyncio.to_thread(self._full, uid) if uid else None
        return _json(full) if full else _error(404, "no such message")

    async def raw(self, request: web.Request) -> web.Response:
        uid = await self._uid(request)
        rec = await asyncio.to_thread(self._record, uid) if uid else None
        if rec is None:
            return _error(404, "no such message")
        data = await asyncio.to_thread(self.service.store().read, FOLDER, uid)
        return web.Response(body=data, content_type="message/rfc822",
                            headers={"X-Content-Type-Options": "nosniff",
                                     "Content-Disposition": f'attachment; filename="{uid}.eml"'})

    async def headers(self, request: web.Request) -> web.Response:
        uid = await self._uid(request)
        full = await asyncio.to_thread(self._full, uid) if uid else None
        return _json(full["Headers"]) if full else _error(404, "no such message")

    async def part(self, request: web.Request) -> web.Response:
        uid = await self._uid(request)
        n = request.match_info.get("n", "")
        if not uid or not n.isdigit() or len(n) > 6:
            return _error(404, "no such part")
        rec = await asyncio.to_thread(self._record, uid)
        if rec is None:
            return _error(404, "no such message")
        data = await asyncio.to_thread(self.service.store().read, FOLDER, uid)

        def pick():
            msg = message.parse(data)
            if request.match_info.route.name == "attachment":
                atts = [p for p in message.parts(msg) if not p["Inline"]]
                if int(n) >= len(atts):
                    return None
                idx = int(atts[int(n)]["PartID"])
            else:
                idx = int(n)
            return message.part_bytes(msg, idx)

        got = await asyncio.to_thread(pick)
        if got is None:
            return _error(404, "no such part")
        body, ctype, fname = got
        safe = "".join(c for c in fname if c.isalnum() or c in "._- ")[:100] or f"part{n}"
        # served as a download, never rendered by the browser as a page of ours
        return web.Response(body=body, content_type="application/octet-stream",
                            headers={"X-Content-Type-Options": "nosniff", "X-Part-Content-Type": ctype[:200],
                                     "Content-Disposition": f'attachment; filename="{safe}"'})

    async def delete_one(self, request: web.Request) -> web.Response:
        uid = await self._uid(request)
        n = await asyncio.to_thread(self._delete, [uid]) if uid else 0
        return _json({"deleted": n}) if n else _error(404, "no such message")

    async def wait(self, request: web.Request) -> web.Response:
        q = request.query
        query = q.get("query", "")
        try:
            timeout = min(MAX_WAIT, max(0.0, float(q.get("timeout", "10"))))
            after = int(q.get("after", "0"))
            compile_query(query)
        except ValueError:
            return _error(400, "timeout and after must be numbers")
        except QueryError as e:
            return _error(400, str(e))
        if self.waiters >= MAX_WAITERS:
            return _error(503, f"more than {MAX_WAITERS} waits at once")
        self.waiters += 1
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        unsubscribe = self.bus.subscribe(SINK_USER, lambda user, folder: loop.call_soon_threadsafe(changed.set))
        try:
            deadline = loop.time() + timeout
            while True:
                changed.clear()
                # each wake-up searches only what arrived since the last look
                newest = await asyncio.to_thread(self._uidnext) - 1
                recs = await asyncio.to_thread(self._matching, query, after)
                if recs:
                    full = await asyncio.to_thread(self._full, recs[0].uid)
                    if full is not None:
                        return _json(full)
                after = max(after, newest)
                left = deadline - loop.time()
                if left <= 0:
                    return _error(408, f"no message matching the query within {timeout:g} s")
                try:
                    await asyncio.wait_for(changed.wait(), left)
                except TimeoutError:
                    pass
        finally:
            unsubscribe()
            self.waiters -= 1

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(OPENAPI)


@web.middleware
async def _guard(request: web.Request, handler):
    host = request.headers.get("Host", "")
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    if name not in _LOOPBACK_HOSTS:
        return _error(403, "this API answers on loopback names only")
    resp = await handler(request)
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def make_app(service) -> web.Application:
    api = SinkAPI(service)
    app = web.Application(middlewares=[_guard], client_max_size=1 << 20)
    r = app.router
    for path in ("/api/v1/messages", "/api/v1/search"):
        r.add_get(path, api.list)
    r.add_delete("/api/v1/messages", api.delete_many)
    r.add_delete("/api/v1/search", api.delete_search)
    r.add_get("/api/v1/message/{id}", api.one)
    r.add_delete("/api/v1/message/{id}", api.delete_one)
    r.add_get("/api/v1/message/{id}/raw", api.raw)
    r.add_get("/api/v1/message/{id}/headers", api.headers)
    r.add_get("/api/v1/message/{id}/part/{n}", api.part, name="part")
    r.add_get("/api/v1/message/{id}/attachment/{n}", api.part, name="attachment")
    r.add_get("/api/v1/wait", api.wait)
    r.add_get("/api/v1/openapi.json", api.openapi)
    return app


async def start_http(service, addr: Address):
    from relay.server import ListenError

    runner = web.AppRunner(make_app(service), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, addr.host, addr.port, reuse_address=True)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise ListenError(f"cannot listen for http on {addr}: {e.strerror or e} (change [listen] http)") from None
    sock = site._server.sockets[0]   # the bound port when 0 was asked for
    return runner, tuple(sock.getsockname()[:2])


def _op(summary: str, params=(), responses=None) -> dict:
    return {"summary": summary,
            "parameters": [{"name": n, "in": where, "required": where == "path", "schema": {"type": t},
                            "description": d} for n, where, t, d in params],
            "responses": responses or {"200": {"description": "OK"}}}


_ID = ("id", "path", "string", "message ID, or latest")
_QUERY = ("query", "query", "string", "search language: from: to: cc: subject: body: since: before: is: has:")
OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "tui-mail relay sink API", "version": "1",
             "description": "Messages caught by a relay in sink mode (shaped after Mailpit's /api/v1)."},
    "paths": {
        "/api/v1/messages": {
            "get": _op("List messages, newest first", [_QUERY, ("start", "query", "integer", "offset"),
                                                        ("limit", "query", "integer", "at most 1000")]),
            "delete": _op("Delete all messages, or those in the JSON body {\"IDs\": [...]}")},
        "/api/v1/search": {"get": _op("Same as GET /api/v1/messages", [_QUERY]),
                           "delete": _op("Delete the messages matching a non-empty query", [_QUERY])},
        "/api/v1/message/{id}": {
            "get": _op("One message parsed: Headers, Text, HTML, Attachments, Inline", [_ID],
                       {"200": {"description": "OK"}, "404": {"description": "no such message"}}),
            "delete": _op("Delete one message", [_ID])},
        "/api/v1/message/{id}/raw": {"get": _op("The message as stored (message/rfc822)", [_ID])},
        "/api/v1/message/{id}/headers": {"get": _op("The header fields, name to list of values", [_ID])},
        "/api/v1/message/{id}/part/{n}": {"get": _op("Decoded part n (PartID)", [_ID, ("n", "path", "integer", "PartID")])},
        "/api/v1/message/{id}/attachment/{n}": {
            "get": _op("Decoded attachment n (0-based, in Attachments order)", [_ID, ("n", "path", "integer", "index")])},
        "/api/v1/wait": {"get": _op(
            "Long poll: the first message matching the query with ID greater than after",
            [_QUERY, ("timeout", "query", "number", "seconds, at most 300 (default 10)"),
             ("after", "query", "integer", "only messages with a larger ID (default 0)")],
            {"200": {"description": "the message, as GET /api/v1/message/{id}"},
             "408": {"description": "nothing matched within timeout"}})},
        "/api/v1/openapi.json": {"get": _op("This document")},
    },
}
