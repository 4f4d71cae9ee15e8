"""Who is on the other end of a connection: the loopback rule for plaintext logins.

``[auth] allow_plaintext_loopback`` lets clients log in without TLS when they connect from
this machine. "This machine" means exactly 127.0.0.1 and ::1 (also 127.0.0.1 written as the
IPv4-mapped ``::ffff:127.0.0.1``), not all of 127.0.0.0/8: any local process may bind another
127.x address, and a relay forwarded to through such an address (a container port mapping, an
SSH or socat tunnel bound to 127.0.0.2) may be carrying traffic from elsewhere. Tunnels that
arrive from 127.0.0.1 still count as local: run them only for people you trust with plaintext.
"""

from __future__ import annotations

import ipaddress

_LOOPBACK = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}


def is_loopback(host: str) -> bool:
    """True only for 127.0.0.1 and ::1 (in any spelling, including ::ffff:127.0.0.1)."""
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip in _LOOPBACK
