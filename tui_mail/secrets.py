"""Passwords: the system keyring by default, ``password_command`` as the alternative, and an
optional interactive prompt last.

A headless box often has no working keyring backend (keyring picks ``fail``/``null``); then
asking for or storing a password raises a SecretError that names both ways out (set
``password_command`` in config.toml, or install/unlock a keyring backend) instead of a
traceback. Passwords are never logged, printed or written to config.toml.

Keyring entries: service ``tui-mail``, user name ``<account>:<kind>`` (kind imap, pop3 or smtp)
with a fallback to ``<account>`` (one password for all of an account's servers).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable

from tui_mail.errors import SecretError

SERVICE = "tui-mail"
KINDS = ("imap", "pop3", "smtp")
COMMAND_TIMEOUT = 60.0


def _no_keyring(detail: str, account: str, kind: str | None) -> SecretError:
    table = f"[accounts.{kind}]" if kind else "the account's [accounts.imap]/[accounts.smtp]"
    return SecretError(
        f"No password store is available for account {account!r} ({detail}). Either set "
        f'password_command = "…" (e.g. "pass show mail/{account}") in {table} of config.toml, '
        "or install and unlock a keyring backend (GNOME Keyring, KWallet, or keyrings.alt "
        "with PYTHON_KEYRING_BACKEND) and run `tui-mail account add` again.")


def keyring_usable() -> tuple[bool, str]:
    """(usable, backend description). ``fail``/``null`` backends count as not usable."""
    try:
        import keyring
        from keyring.backends import fail, null
        kr = keyring.get_keyring()
    except Exception as e:  # noqa: BLE001 - a broken backend import is "no keyring"
        return False, f"the keyring library failed: {type(e).__name__}"
    if isinstance(kr, (fail.Keyring, null.Keyring)):
        return False, "no keyring backend on this system"
    chained = getattr(kr, "backends", None)
    if chained is not None and not [b for b in chained if not isinstance(b, (fail.Keyring, null.Keyring))]:
        return False, "no keyring backend on this system"
    return True, f"{type(kr).__module__}.{type(kr).__name__}"


def _key(account: str, kind: str | None) -> str:
    return f"{account}:{kind}" if kind else account


def run_password_command(command: str, account: str = "", kind: str | None = None) -> str:
    """Run ``command`` (through the shell, as mail tools do) and return its first output line."""
    try:
        done = subprocess.run(command, shell=True, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SecretError(f"password_command of account {account!r} did not finish within "
                          f"{COMMAND_TIMEOUT:g} s ({describe_command(command)})") from None
    except OSError as e:
        raise SecretError(f"cannot run password_command of account {account!r}: {e}") from None
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip().splitlines()
        why = f": {err[0][:200]}" if err else ""
        raise SecretError(f"password_command of account {account!r} failed (exit status "
                          f"{done.returncode}, {describe_command(command)}){why}. Fix password_command in config.toml.")
    out = done.stdout.decode("utf-8", "replace").splitlines()
    if not out or not out[0]:
        raise SecretError(f"password_command of account {account!r} printed nothing; it must print "
                          f"the password on its first line ({describe_command(command)})")
    return out[0]


def get_password(account: str, kind: str | None = None, *, password_command: str | None = None,
                 prompt: Callable[[str], str] | None = None) -> str:
    """The password for ``account`` (server ``kind``): password_command when set, else the
    keyring, else ``prompt(question)`` when given. Raises SecretError saying what to do."""
    if password_command:
        return run_password_command(password_command, account, kind)
    usable, detail = keyring_usable()
    if usable:
        import keyring
        import keyring.errors
        try:
            for key in (_key(account, kind), _key(account, None)) if kind else (_key(account, None),):
                pw = keyring.get_password(SERVICE, key)
                if pw is not None:
                    return pw
        except keyring.errors.KeyringError as e:
            usable, detail = False, f"the keyring refused: {e}"
        except Exception as e:  # noqa: BLE001 - backends raise anything (dbus, locked…)
            usable, detail = False, f"the keyring failed: {type(e).__name__}"
    if prompt is not None:
        return prompt(f"Password for {account}" + (f" ({kind})" if kind else "") + ": ")
    if not usable:
        raise _no_keyring(detail, account, kind)
    raise SecretError(f"No password stored for account {account!r}. Run `tui-mail account add` to "
                      f"store one in the keyring, or set password_command in config.toml.")


def set_password(account: str, password: str, kind: str | None = None) -> None:
    """Store a password in the keyring (for one server kind, or the whole account)."""
    usable, detail = keyring_usable()
    if not usable:
        raise _no_keyring(detail, account, kind)
    import keyring
    try:
        keyring.set_password(SERVICE, _key(account, kind), password)
    except Exception as e:  # noqa: BLE001
        raise _no_keyring(f"storing failed: {type(e).__name__}", account, kind) from None


def delete_password(account: str, kind: str | None = None) -> bool:
    """Forget a stored password; False when there was none (or no keyring)."""
    if not keyring_usable()[0]:
        return False
    import keyring
    import keyring.errors
    try:
        keyring.delete_password(SERVICE, _key(account, kind))
        return True
    except keyring.errors.PasswordDeleteError:
        return False
    except Exception:  # noqa: BLE001
        return False


def password_for(account, kind: str, prompt: Callable[[str], str] | None = None) -> str | None:
    """For tui_mail.accounts: the password of ``account``'s ``kind`` server from its config
    (``password_command``) or the keyring; None when that server logs in without a user."""
    server = getattr(account, kind, None)
    if server is None or getattr(server, "auth", "password") == "oauth2":   # tokens: tui_mail.oauth2
        return None
    command = getattr(server, "password_command", None) or getattr(account, "password_command", None)
    return get_password(account.name, kind, password_command=command, prompt=prompt)


def describe_command(command: str) -> str:
    """The program a password_command runs: messages name it, never its arguments (which
    may hold a secret, e.g. ``echo hunter2``)."""
    try:
        return shlex.split(command)[0]
    except (ValueError, IndexError):
        return "(unparsable command)"
