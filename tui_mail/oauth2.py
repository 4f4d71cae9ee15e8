"""OAuth2 for mail servers: getting, keeping and using access tokens (``auth = "oauth2"``).

Where a token comes from, per account:

- ``token_command`` (account level or per server): a program that prints an access token
  (what aerc/neomutt users already have, e.g. ``oama access bob@gmail.com``); run on each
  login, and again once if the server refuses the token;
- otherwise the built-in flow (``tui-mail account add --oauth2 google|microsoft|custom``):
  the device-code flow (RFC 8628; Microsoft's default) or the loopback-redirect flow with PKCE
  (RFC 8252 + RFC 7636; Google's default), with the user's own client id. The refresh token
  is kept in the keyring (``<account>:oauth2``); access tokens live in memory only, are
  refreshed a minute before they expire and again when a server refuses one. A refresh token
  the provider no longer accepts (``invalid_grant``: revoked, expired, password changed) is an
  ``OAuth2Error`` that says which command signs in again.

Using a token: SASL ``OAUTHBEARER`` (RFC 7628) when the server advertises it, else ``XOAUTH2``
(Google/Microsoft's older mechanism) — ``imap_login``, ``pop3_login`` and ``smtp_login``.
Tokens never reach a log, an error message or the protocol trace (the trace shows ``****``).

Why hand-written HTTP (urllib, three form POSTs and a tiny loopback listener) instead of
requests-oauthlib/authlib: the protocol parts are small and fixed, we need no HTTP stack
besides the stdlib, and oauthlib refuses plain-http endpoints, which our loopback test
provider (and some on-premises ones) use.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import secrets as pysecrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from tui_mail.errors import AuthError

KEY_KIND = "oauth2"                 # keyring user name "<account>:oauth2"
REFRESH_MARGIN = 60.0               # refresh this many seconds before expiry
HTTP_TIMEOUT = 30.0

PROVIDERS: dict[str, dict[str, str]] = {
    "google": {
        "auth_url": "https://accounts.google.com/o/oauth2/v2/auth",
        "token_url": "https://oauth2.googleapis.com/token",
        "device_url": "https://oauth2.googleapis.com/device/code",
        "scope": "https://mail.google.com/",
        "flow": "browser",
    },
    "microsoft": {
        "auth_url": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
        "token_url": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        "device_url": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode",
        "scope": ("https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/POP.AccessAsUser.All "
                  "https://outlook.office.com/SMTP.Send offline_access"),
        "flow": "device",
    },
    "custom": {"flow": "browser"},
}


class OAuth2Error(AuthError):
    """No usable token: the message says what to run or configure."""


@dataclass(frozen=True)
class Endpoints:
    client_id: str
    token_url: str
    auth_url: str = ""
    device_url: str = ""
    scope: str = ""
    client_secret: str = ""
    redirect_port: int = 0

    @classmethod
    def from_config(cls, table: dict) -> "Endpoints":
        """``[accounts.oauth2]`` (provider presets filled in) → Endpoints."""
        provider = table.get("provider", "custom")
        preset = dict(PROVIDERS.get(provider, {}))
        merged = {**preset, **{k: v for k, v in table.items() if v not in (None, "")}}
        tenant = merged.get("tenant", "common")
        urls = {k: str(merged.get(k, "")).replace("{tenant}", tenant) for k in ("auth_url", "token_url", "device_url")}
        if not merged.get("client_id"):
            raise OAuth2Error(f"[accounts.oauth2] needs client_id (your {provider} app's client id)")
        if not urls["token_url"]:
            raise OAuth2Error("[accounts.oauth2] needs token_url for provider = \"custom\"")
        return cls(client_id=merged["client_id"], client_secret=merged.get("client_secret", ""),
                   scope=merged.get("scope", ""), redirect_port=int(merged.get("redirect_port", 0) or 0), **urls)


@dataclass
class Tokens:
    access_token: str
    expires_at: float            # time.time() seconds
    refresh_token: str = ""


# --- HTTP -------------------------------------------------------------------------------------
def _post(url: str, form: dict[str, str]) -> tuple[int, dict]:
    data = urllib.parse.urlencode(form).encode()
    req = urllib.request.Request(url, data=data, headers={"Accept": "application/json",
                                                          "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            status, body = resp.status, resp.read(1 << 20)
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read(1 << 20)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise OAuth2Error(f"cannot reach the OAuth2 provider at {_origin(url)}: {reason}") from None
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        raise OAuth2Error(f"the OAuth2 provider at {_origin(url)} answered {status} without JSON") from None
    return status, doc if isinstance(doc, dict) else {}


def _origin(url: str) -> str:
    p = urllib.parse.urlsplit(url)
    return f"{p.scheme}://{p.netloc}"


def _tokens(doc: dict, old_refresh: str = "") -> Tokens:
    token = doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise OAuth2Error("the OAuth2 provider's answer has no access_token")
    try:
        lifetime = float(doc.get("expires_in", 3600))
    except (TypeError, ValueError):
        lifetime = 3600.0
    return Tokens(token, time.time() + lifetime, str(doc.get("refresh_token") or old_refresh))


def _error_text(doc: dict) -> str:
    err = str(doc.get("error", "unknown_error"))[:80]
    desc = str(doc.get("error_description", ""))[:200]
    return f"{err}" + (f" ({desc})" if desc else "")


def _client_form(ep: Endpoints) -> dict[str, str]:
    form = {"client_id": ep.client_id}
    if ep.client_secret:
        form["client_secret"] = ep.client_secret
    return form


def refresh(ep: Endpoints, refresh_token: str, account: str = "", provider: str = "") -> Tokens:
    status, doc = _post(ep.token_url, {**_client_form(ep), "grant_type": "refresh_token",
                                       "refresh_token": refresh_token})
    if status == 200 and "access_token" in doc:
        return _tokens(doc, refresh_token)
    if doc.get("error") == "invalid_grant":
        raise OAuth2Error(
            f"The OAuth2 sign-in of account {account!r} is no longer valid (revoked or expired: "
            f"{_error_text(doc)}). Sign in again with: tui-mail account add --name {account} "
            f"--oauth2 {provider or 'PROVIDER'}  (or set token_command in config.toml)")
    raise OAuth2Error(f"the OAuth2 provider refused to refresh the token of account {account!r}: {_error_text(doc)}")


# --- device-code flow (RFC 8628) ---------------------------------------------------------------
def device_flow(ep: Endpoints, tell: Callable[[str], None], sleep: Callable[[float], None] = time.sleep,
                max_wait: float = 900.0) -> Tokens:
    """Ask for a device code, ``tell`` the user where to enter it, poll until they did."""
    if not ep.device_url:
        raise OAuth2Error("this provider has no device_url: use the browser flow")
    status, doc = _post(ep.device_url, {**_client_form(ep), "scope": ep.scope})
    if status != 200 or "device_code" not in doc:
        raise OAuth2Error(f"the OAuth2 provider refused the device code request: {_error_text(doc)}")
    uri = doc.get("verification_uri_complete") or doc.get("verification_uri") or doc.get("verification_url")
    tell(f"Open {uri} in a browser and enter the code {doc.get('user_code')}")
    interval = max(1.0, float(doc.get("interval", 5)))
    deadline = time.monotonic() + min(max_wait, float(doc.get("expires_in", max_wait)))
    while time.monotonic() < deadline:
        sleep(interval)
        status, tok = _post(ep.token_url, {**_client_form(ep), "device_code": doc["device_code"],
                                           "grant_type": "urn:ietf:params:oauth:grant-type:device_code"})
        if status == 200 and "access_token" in tok:
            return _tokens(tok)
        err = tok.get("error")
        if err == "authorization_pending":
            continue
        if err == "slow_down":
            interval += 5
            continue
        raise OAuth2Error(f"sign-in did not complete: {_error_text(tok)}")
    raise OAuth2Error("sign-in timed out: the code was not entered in time")


# --- authorization code + PKCE over a loopback redirect (RFC 8252, RFC 7636) --------------------
def pkce_pair() -> tuple[str, str]:
    verifier = base64.urlsafe_b64encode(pysecrets.token_bytes(48)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def open_browser(url: str) -> None:   # tests replace this with an HTTP client that follows redirects
    import webbrowser

    webbrowser.open(url)


def browser_flow(ep: Endpoints, tell: Callable[[str], None], timeout: float = 300.0) -> Tokens:
    """Open the provider's sign-in page; receive the code on http://127.0.0.1:PORT/; exchange it
    with the PKCE verifier. The listener takes one request with the right ``state``."""
    if not ep.auth_url:
        raise OAuth2Error("this provider has no auth_url: use the device flow")
    verifier, challenge = pkce_pair()
    state = pysecrets.token_urlsafe(24)
    got: dict[str, str] = {}
    done = threading.Event()

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            if query.get("state") != state:
                self.send_error(400, "unexpected request")
                return
            got.update(query)
            done.set()
            body = b"<html><body><p>Signed in. You can close this page and return to tui-mail.</p></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):   # the query holds the code: never log it
            pass

    server = http.server.HTTPServer(("127.0.0.1", ep.redirect_port), Receiver)
    server.timeout = 0.5
    redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/"
    url = ep.auth_url + ("&" if "?" in ep.auth_url else "?") + urllib.parse.urlencode({
        "response_type": "code", "client_id": ep.client_id, "redirect_uri": redirect_uri, "scope": ep.scope,
        "state": state, "code_challenge": challenge, "code_challenge_method": "S256",
        "access_type": "offline", "prompt": "consent"})
    tell(f"Sign in in your browser (opening it now); if it does not open, visit:\n{url}")
    threading.Thread(target=open_browser, args=(url,), daemon=True).start()
    end = time.monotonic() + timeout
    try:
        while not done.is_set() and time.monotonic() < end:
            server.handle_request()
    finally:
        server.server_close()
    if not done.is_set():
        raise OAuth2Error("sign-in timed out: no answer from the browser")
    if "code" not in got:
        raise OAuth2Error(f"sign-in refused: {_error_text(got)}")
    status, doc = _post(ep.token_url, {**_client_form(ep), "grant_type": "authorization_code", "code": got["code"],
                                       "redirect_uri": redirect_uri, "code_verifier": verifier})
    if status != 200 or "access_token" not in doc:
        raise OAuth2Error(f"the OAuth2 provider refused the sign-in code: {_error_text(doc)}")
    return _tokens(doc)


# --- the keyring --------------------------------------------------------------------------------
def save_refresh_token(account: str, token: str) -> None:
    from tui_mail import secrets
    from tui_mail.errors import SecretError

    try:
        secrets.set_password(account, token, kind=KEY_KIND)
    except SecretError as e:
        raise SecretError(f"cannot keep the OAuth2 refresh token of account {account!r}: {e} For OAuth2 the "
                          "alternative is token_command = \"…\" (a program that prints an access token, "
                          "e.g. oama or mutt_oauth2.py) with auth = \"oauth2\".") from None


def load_refresh_token(account: str) -> str | None:
    from tui_mail import secrets

    usable, _ = secrets.keyring_usable()
    if not usable:
        return None
    import keyring

    try:
        return keyring.get_password(secrets.SERVICE, f"{account}:{KEY_KIND}")
    except Exception:  # noqa: BLE001 - backends raise anything (dbus, locked…)
        return None


# --- the token source a store logs in with ------------------------------------------------------
class TokenSource:
    """``source(refresh=False) -> access token`` for one account (thread-safe)."""

    def __init__(self, account: str, *, token_command: str | None = None, oauth2: dict | None = None,
                 tokens: Tokens | None = None):
        self.account, self.token_command = account, token_command
        self.table = dict(oauth2 or {})
        self._tokens = tokens
        self._lock = threading.Lock()

    def __call__(self, refresh_now: bool = False) -> str:
        if self.token_command:
            from tui_mail import secrets

            from tui_mail.errors import SecretError

            try:
                return secrets.run_password_command(self.token_command, self.account, KEY_KIND)
            except SecretError as e:
                raise OAuth2Error(str(e).replace("password_command", "token_command")) from None
        with self._lock:
            t = self._tokens
            if t is not None and not refresh_now and t.expires_at - time.time() > REFRESH_MARGIN:
                return t.access_token
            if not self.table:
                raise OAuth2Error(f"account {self.account!r} uses auth = \"oauth2\" but has neither token_command "
                                  "nor [accounts.oauth2]: run tui-mail account add --oauth2 … or set token_command")
            stored = (t.refresh_token if t else "") or load_refresh_token(self.account)
            provider = self.table.get("provider", "custom")
            if not stored:
                raise OAuth2Error(f"no OAuth2 sign-in is stored for account {self.account!r}: run "
                                  f"tui-mail account add --name {self.account} --oauth2 {provider}")
            new = refresh(Endpoints.from_config(self.table), stored, self.account, provider)
            if new.refresh_token != stored:
                save_refresh_token(self.account, new.refresh_token)   # rotated by the provider
            self._tokens = new
            return new.access_token


_SOURCES: dict[tuple, TokenSource] = {}
_SOURCES_LOCK = threading.Lock()


def _source_key(account, server) -> tuple:
    command = getattr(server, "token_command", None) or getattr(account, "token_command", None)
    return (account.name, command, json.dumps(dict(getattr(account, "oauth2", None) or {}), sort_keys=True))


def prime(account, source: TokenSource) -> None:
    """Use ``source`` (fresh tokens from a sign-in) for this account's servers in this process."""
    with _SOURCES_LOCK:
        for kind in ("imap", "pop3", "smtp"):
            server = getattr(account, kind, None)
            if server is not None:
                _SOURCES[_source_key(account, server)] = source


def token_source_for(account, server) -> TokenSource:
    """The (shared) token source of an account's server with ``auth = "oauth2"``."""
    command = getattr(server, "token_command", None) or getattr(account, "token_command", None)
    table = dict(getattr(account, "oauth2", None) or {})
    key = _source_key(account, server)
    with _SOURCES_LOCK:
        if key not in _SOURCES:
            _SOURCES[key] = TokenSource(account.name, token_command=command, oauth2=table)
        return _SOURCES[key]


# --- SASL ---------------------------------------------------------------------------------------
def xoauth2(user: str, token: str) -> str:
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def oauthbearer(user: str, token: str, host: str = "", port: int = 0) -> str:
    gs2 = "n,a=" + user.replace("=", "=3D").replace(",", "=2C") + ","
    hp = (f"host={host}\x01" if host else "") + (f"port={port}\x01" if port else "")
    return f"{gs2}\x01{hp}auth=Bearer {token}\x01\x01"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def choose_mechanism(offered: set[str], where: str) -> str:
    """OAUTHBEARER (the standard) when offered, else XOAUTH2."""
    offered = {m.upper() for m in offered}
    for mech in ("OAUTHBEARER", "XOAUTH2"):
        if mech in offered:
            return mech
    raise OAuth2Error(f"{where} offers neither OAUTHBEARER nor XOAUTH2 (offers: {', '.join(sorted(offered)) or 'none'}); "
                      'set auth = "password" for this server')


def _with_retry(login: Callable[[str], None], source: Callable[[bool], str], refused: type[BaseException]) -> None:
    """Log in with the current token; when refused, once more with a freshly refreshed one."""
    try:
        login(source(False))
    except refused:
        login(source(True))


def imap_login(client, user: str, source: Callable[[bool], str], where: str) -> str:
    """Log an imapclient.IMAPClient in by OAUTHBEARER/XOAUTH2; returns the mechanism used."""
    from imapclient import exceptions as imapx

    caps = {c.decode() if isinstance(c, bytes) else str(c) for c in client.capabilities()}
    mech = choose_mechanism({c[5:] for c in caps if c.upper().startswith("AUTH=")}, where)

    def login(token: str) -> None:
        if mech == "OAUTHBEARER":
            client.oauthbearer_login(user, token)
        else:
            client.oauth2_login(user, token)

    _with_retry(login, source, imapx.LoginError)
    return mech


class _Refused(Exception):
    pass


def pop3_login(conn, user: str, source: Callable[[bool], str], sasl: list[str], where: str) -> str:
    """AUTH (RFC 5034, initial response) on a poplib connection; returns the mechanism."""
    mech = choose_mechanism(set(sasl), where)
    host, port = where.rsplit(":", 1) if ":" in where else (where, "0")

    def login(token: str) -> None:
        text = oauthbearer(user, token, host, int(port)) if mech == "OAUTHBEARER" else xoauth2(user, token)
        conn._putcmd(f"AUTH {mech} {b64(text)}")
        resp = conn._getline()[0]
        if resp.startswith(b"+ ") or resp == b"+":       # an error challenge: finish the exchange
            conn._putcmd("AQ==" if mech == "OAUTHBEARER" else "")
            resp = conn._getline()[0]
        if not resp.startswith(b"+OK"):
            raise _Refused(resp.decode("utf-8", "replace")[:200])

    try:
        _with_retry(login, source, _Refused)
    except _Refused as e:
        raise OAuth2Error(f"{where} refused the OAuth2 token for {user!r}: {e}") from None
    return mech


async def smtp_login(client, user: str, source: Callable[[bool], str], where: str,
                     trace: Callable[[str], None] | None = None) -> str:
    """AUTH on an aiosmtplib.SMTP client; returns (mechanism, the server's final reply)."""
    import aiosmtplib

    mech = choose_mechanism(set(client.server_auth_methods), where)

    async def attempt(token: str):
        if trace:
            trace(f"AUTH {mech} ****")
        if mech == "XOAUTH2":
            return await client.auth_xoauth2(user, token)
        host, _, port = where.rpartition(":")
        resp = await client.execute_command(b"AUTH", b"OAUTHBEARER", b64(oauthbearer(user, token, host, int(port or 0))).encode())
        if resp.code == 334:
            resp = await client.execute_command(b"AQ==")
        if resp.code != 235:
            raise aiosmtplib.SMTPAuthenticationError(resp.code, resp.message)
        return resp

    try:
        return mech, await attempt(source(False))
    except aiosmtplib.SMTPAuthenticationError:
        return mech, await attempt(source(True))
