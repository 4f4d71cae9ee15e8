"""An OAuth2 provider and a Dovecot that trusts it, both on loopback, for OAuth2 tests without
the internet.

``TokenServer``: a stdlib HTTP server that issues, introspects (RFC 7662) and refreshes tokens
and implements the device-code (RFC 8628) and authorization-code + PKCE (RFC 7636) flows.
The test drives it: ``expire_access_tokens()``, ``revoke_refresh_tokens()``, counters of each
grant, and ``issued`` (every token it ever gave out, to prove none leaks into a log or trace).
It auto-approves sign-ins (a test plays the user's browser by following the redirect).

``OAuthDovecot``: tests.peers.Dovecot with the ``oauth2`` passdb (XOAUTH2 and OAUTHBEARER)
validating tokens against the TokenServer's introspection URL. ``SaslPostfix``: Postfix
submission whose SASL is that Dovecot's (Debian ships no dovecot-submissiond here), so SMTP
logins are checked against the same tokens.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import secrets
import threading
import time
import urllib.parse
from pathlib import Path

from tests.peers import Dovecot, _free_port
from tests.postfix_peer import Postfix


class TokenServer:
    def __init__(self, users: dict[str, str] | None = None, access_lifetime: int = 3600,
                 client_id: str = "tui-mail-test"):
        self.client_id = client_id
        self.access_lifetime = access_lifetime
        self.access: dict[str, tuple[str, float]] = {}     # token → (user, expires at)
        self.refresh: dict[str, str] = {}                  # refresh token → user
        self.revoked: set[str] = set()
        self.codes: dict[str, dict] = {}                   # auth code → {user, challenge, redirect}
        self.devices: dict[str, dict] = {}                 # device code → {user, polls}
        self.issued: list[str] = []
        self.counts = {"refresh_token": 0, "authorization_code": 0, "device_code": 0, "introspect": 0}
        self.default_user = next(iter(users)) if users else "bob"
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, status: int, doc: dict) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _form(self) -> dict:
                n = int(self.headers.get("Content-Length") or 0)
                return dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))

            def do_GET(self):  # noqa: N802
                url = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(url.query))
                if url.path != "/authorize":
                    return self._json(404, {"error": "not_found"})
                if q.get("client_id") != owner.client_id or q.get("code_challenge_method") != "S256":
                    return self._json(400, {"error": "invalid_request"})
                code = secrets.token_urlsafe(16)
                with owner.lock:
                    owner.codes[code] = {"user": owner.default_user, "challenge": q["code_challenge"],
                                         "redirect": q["redirect_uri"]}
                target = q["redirect_uri"] + "?" + urllib.parse.urlencode({"code": code, "state": q.get("state", "")})
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):  # noqa: N802
                path = urllib.parse.urlsplit(self.path).path
                form = self._form()
                with owner.lock:
                    status, doc = owner.handle(path, form)
                self._json(status, doc)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # --- endpoints ---------------------------------------------------------------------
    def _issue(self, user: str) -> dict:
        access, refresh = "at-" + secrets.token_urlsafe(24), "rt-" + secrets.token_urlsafe(24)
        self.access[access] = (user, time.time() + self.access_lifetime)
        self.refresh[refresh] = user
        self.issued += [access, refresh]
        return {"access_token": access, "token_type": "Bearer", "expires_in": self.access_lifetime,
                "refresh_token": refresh, "scope": "mail"}

    def handle(self, path: str, form: dict) -> tuple[int, dict]:
        if path == "/introspect":
            self.counts["introspect"] += 1
            user, exp = self.access.get(form.get("token", ""), ("", 0.0))
            if not user or exp < time.time():
                return 200, {"active": False}
            return 200, {"active": True, "username": user, "exp": int(exp)}
        if path == "/device":
            if form.get("client_id") != self.client_id:
                return 400, {"error": "invalid_client"}
            code = secrets.token_urlsafe(16)
            self.devices[code] = {"user": self.default_user, "polls": 0}
            return 200, {"device_code": code, "user_code": "WDJB-MJHT", "verification_uri": f"{self.url}/device",
                         "expires_in": 60, "interval": 1}
        if path != "/token":
            return 404, {"error": "not_found"}
        if form.get("client_id") != self.client_id:
            return 401, {"error": "invalid_client"}
        grant = form.get("grant_type", "")
        if grant == "refresh_token":
            self.counts["refresh_token"] += 1
            rt = form.get("refresh_token", "")
            if rt in self.revoked or rt not in self.refresh:
                return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
            return 200, {k: v for k, v in self._issue(self.refresh[rt]).items() if k != "refresh_token"}
        if grant == "authorization_code":
            self.counts["authorization_code"] += 1
            info = self.codes.pop(form.get("code", ""), None)
            if info is None or info["redirect"] != form.get("redirect_uri"):
                return 400, {"error": "invalid_grant"}
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if challenge != info["challenge"]:
                return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
            return 200, self._issue(info["user"])
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            self.counts["device_code"] += 1
            info = self.devices.get(form.get("device_code", ""))
            if info is None:
                return 400, {"error": "expired_token"}
            info["polls"] += 1
            if info["polls"] < 2:                  # the user has not entered the code yet
                return 400, {"error": "authorization_pending"}
            del self.devices[form["device_code"]]
            return 200, self._issue(info["user"])
        return 400, {"error": "unsupported_grant_type"}

    # --- test controls -----------------------------------------------------------------
    def expire_access_tokens(self) -> None:
        with self.lock:
            self.access = {t: (u, 0.0) for t, (u, _) in self.access.items()}

    def revoke_refresh_tokens(self) -> None:
        with self.lock:
            self.revoked |= set(self.refresh)

    def grant(self, user: str | None = None) -> dict:
        """Tokens as if the user had signed in (for tests that skip the flows)."""
        with self.lock:
            return self._issue(user or self.default_user)

    def oauth2_table(self) -> dict:
        return {"provider": "custom", "client_id": self.client_id, "token_url": f"{self.url}/token",
                "auth_url": f"{self.url}/authorize", "device_url": f"{self.url}/device", "scope": "mail"}

    def __enter__(self) -> "TokenServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class OAuthDovecot(Dovecot):
    """Dovecot whose logins are XOAUTH2/OAUTHBEARER checked against ``tokens`` (introspection);
    its auth service also listens on ``auth_port`` for Postfix's SASL (``SaslPostfix``)."""

    def __init__(self, root, tokens: TokenServer, **kw):
        self.tokens = tokens
        self.auth_port = _free_port()
        super().__init__(root, **kw)

    def _config(self) -> str:
        conf = Path(self.root) / "dovecot-oauth2.conf.ext"
        conf.write_text(f"""introspection_mode = post
introspection_url = {self.tokens.url}/introspect
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
""")
        text = super()._config()
        text = text.replace("auth_mechanisms = plain login", "auth_mechanisms = xoauth2 oauthbearer")
        # refused tokens are part of the tests: no per-IP auth penalty (2 s, 4 s, … per failure)
        old_anvil = "service anvil {\n  chroot =\n}"
        assert old_anvil in text
        text = text.replace(old_anvil, "service anvil {\n  chroot =\n  unix_listener anvil-auth-penalty {\n"
                                       "    mode = 0\n  }\n}")
        start = text.index("passdb {")
        end = text.index("}", start) + 1
        text = text[:start] + f"""passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {conf}
}}""" + text[end:]
        old = "service auth {\n  user = root\n}"
        assert old in text
        return text.replace(old, f"""service auth {{
  user = root
  inet_listener auth-postfix {{
    address = 127.0.0.1
    port = {self.auth_port}
  }}
}}""")


class SaslPostfix(Postfix):
    """Postfix whose submission needs SASL, done by the OAuthDovecot's auth service (the way a
    self-hosted Postfix + Dovecot server is set up); relaying is for authenticated clients only."""

    def __init__(self, dovecot_auth_port: int, **kw):
        self.dovecot_auth_port = dovecot_auth_port
        super().__init__(**kw)

    def _config(self) -> str:
        text = super()._config()
        text = text.replace("smtpd_relay_restrictions = permit_mynetworks, reject",
                            "smtpd_relay_restrictions = permit_sasl_authenticated, reject")
        text = text.replace("smtpd_recipient_restrictions = permit_mynetworks, reject",
                            "smtpd_recipient_restrictions = permit_sasl_authenticated, reject")
        return text + f"""smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{self.dovecot_auth_port}
smtpd_sasl_security_options = noanonymous
smtpd_error_sleep_time = 0
"""
