"""A tiny authoritative DNS server on loopback for tests (UDP, in the test's own event loop).

dnslib parses and builds the packets; this file only answers from a zone given as text in
master-file syntax (``"hamburger.edu. 60 IN MX 10 mx1.hamburger.edu."``). Names in the zone
answer with their records (NOERROR + empty answer when the name exists with other types), names
not in the zone get NXDOMAIN, and names listed in ``servfail`` get SERVFAIL. No threads, so
nothing can leak past the test; ``queries`` records what was asked, for assertions.
"""

from __future__ import annotations

import asyncio

from dnslib import QTYPE, RCODE, RR, DNSRecord


class DNSServer(asyncio.DatagramProtocol):
    def __init__(self, zone: str, servfail: tuple[str, ...] = ()):
        self.records = RR.fromZone(zone)
        self.servfail = {n.lower().rstrip(".") for n in servfail}
        self.queries: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1") -> int:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, 0))
        self.port = self.transport.get_extra_info("sockname")[1]
        return self.port

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    async def __aenter__(self) -> DNSServer:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            request = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - garbage on the socket: ignore it like a real server
            return
        reply = self.answer(request)
        if self.transport is not None:
            self.transport.sendto(reply.pack(), addr)

    def answer(self, request: DNSRecord) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).lower().rstrip(".")
        qtype = QTYPE[request.q.qtype]
        self.queries.append((qname, qtype))
        if qname in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        known = False
        for rr in self.records:
            if str(rr.rname).lower().rstrip(".") != qname:
                continue
            known = True
            if QTYPE[rr.rtype] == qtype or qtype == "ANY":
                reply.add_answer(rr)
        if not known:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply
