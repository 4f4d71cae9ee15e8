"""An IMAP server process with a change feed, for tests/test_store_multiprocess_feed.py and
bench/feed_latency.py: the relay's IMAP server over MailStore(MAIL_DIR) whose ChangeBus is joined
to the other processes by relay.feed.Feed(RUN_DIR).

    python tests/feed_imap_server.py MAIL_DIR RUN_DIR USER PASSWORD

Prints ``{"port": N, "pid": P}`` once listening on 127.0.0.1, and stops when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.events import ChangeBus  # noqa: E402
from relay.feed import Feed  # noqa: E402
from relay.imap.server import start_imap_server, stop_imap_server  # noqa: E402
from relay.store import MailStore  # noqa: E402


async def main() -> None:
    mail_dir, run_dir, user, password = sys.argv[1:5]

    async def auth(u: str, p: str) -> bool:
        return (u, p) == (user, password)

    bus = ChangeBus()
    feed = Feed(Path(run_dir), bus)
    await feed.start()
    import os
    with MailStore(Path(mail_dir), bus) as store:
        srv = await start_imap_server("127.0.0.1", 0, store=store.user, authenticate=auth, bus=bus,
                                      ssl_context=None, allow_plaintext="loopback", hostname="test")
        print(json.dumps({"port": srv.sockets[0].getsockname()[1], "pid": os.getpid()}), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)      # until the test closes stdin
        await stop_imap_server(srv)
    feed.close()


if __name__ == "__main__":
    asyncio.run(main())
