"""SMTP AUTH PLAIN and LOGIN (RFC 4954, 4616) for the submission listener.

aiosmtpd's built-in mechanisms call a *synchronous* authenticator, which would block the event
loop for the whole scrypt hash and leave no room for the per-IP throttle. So we hand-write the
two mechanisms here as async ``auth_PLAIN``/``auth_LOGIN`` methods that aiosmtpd picks up from
the handler: decode the SASL exchange (pure functions below), then check the password in a
worker thread under the shared throttle (per IP and per account, relay/users.py). Passwords are never logged; the log line names the
mechanism and the login only.
"""

from __future__ import annotations

import asyncio
import binascii
from base64 import b64decode

from aiosmtpd.smtp import MISSING, AuthResult, LoginPassword

from relay.log import maillog
from relay.users import AuthThrottle, UserDB


def decode_plain(blob: bytes) -> tuple[str, str] | None:
    """RFC 4616 message ``[authzid] NUL authcid NUL passwd`` → (login, password)."""
    parts = blob.split(b"\x00")
    if len(parts) != 3:
        return None
    authzid, login, password = parts
    try:
        login_s, password_s, authz_s = login.decode(), password.decode(), authzid.decode()
    except UnicodeDecodeError:
        return None
    if authz_s and authz_s.lower() != login_s.lower():
        return None  # acting as someone else is not supported
    return login_s, password_s


def b64(blob: str) -> bytes | None:
    try:
        return b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None


class Authenticator:
    """The AUTH half of the submission handler (mixed into the aiosmtpd handler object)."""

    users: UserDB
    throttle: AuthThrottle

    async def _check(self, server, mechanism: str, login: str, password: str) -> AuthResult:
        ip = server.session.peer[0] if server.session.peer else "?"
        ok = await self.throttle.check(ip, login, lambda: asyncio.to_thread(self.users.authenticate, login, password))
        if ok:
            maillog().info("client=[%s], sasl_method=%s, sasl_username=%s", ip, mechanism, login.lower())
            return AuthResult(success=True, auth_data=LoginPassword(login.lower().encode(), b""))
        maillog().warning("[%s]: SASL %s authentication failed for %s", ip, mechanism, login[:64] or "<empty>")
        return AuthResult(success=False, handled=False, message="535 5.7.8 Error: authentication failed")

    async def auth_PLAIN(self, server, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await server.challenge_auth("", encode_to_b64=False)
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            blob = b64(args[1])
            if blob is None:
                return AuthResult(success=False, handled=False, message="501 5.5.2 Error: cannot decode base64")
        creds = decode_plain(blob)
        if creds is None:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Error: malformed PLAIN response")
        return await self._check(server, "PLAIN", *creds)

    async def auth_LOGIN(self, server, args: list[str]) -> AuthResult:
        if len(args) == 2:
            login_b = b64(args[1])
            if login_b is None:
                return AuthResult(success=False, handled=False, message="501 5.5.2 Error: cannot decode base64")
        else:
            login_b = await server.challenge_auth("Username:")
            if login_b is MISSING:
                return AuthResult(success=False, handled=True)
        password_b = await server.challenge_auth("Password:")
        if password_b is MISSING:
            return AuthResult(success=False, handled=True)
        try:
            login, password = login_b.decode(), password_b.decode()
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Error: login is not UTF-8")
        return await self._check(server, "LOGIN", login, password)
