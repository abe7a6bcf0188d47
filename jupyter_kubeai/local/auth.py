"""``DemoAuthenticator``: the local-mode login for the demo users.

Only the configured demo users (``Authenticator.allowed_users``) may log in,
all with one password that is random per installation: it is written once
to ``$KUBEAI_STATE_DIR/demo-password`` (mode 0600) and printed by
``make run``. The authenticator refuses to start when the hub listens on
anything but a loopback address, unless an admin says otherwise: a demo
login is never reachable from the network by accident.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from hmac import compare_digest
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.auth import Authenticator
from traitlets import Bool, Unicode, default

PASSWORD_FILE_NAME = "demo-password"


def is_loopback_host(host: str | None) -> bool:
    """True when ``host`` (a bind address or name) is only reachable locally."""
    if not host:
        return False  # "" binds every interface
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_or_create_password(path: Path) -> str:
    """Return the password stored at ``path``, creating a random one first."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    # O_EXCL: if two hubs start at once, one writes and both read the same.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


class DemoAuthenticator(Authenticator):
    """Password login for the demo users of local mode."""

    password_file = Unicode(
        config=True,
        help="""File holding the demo password (created with a random password, mode 0600).

        Default: ``$KUBEAI_STATE_DIR/demo-password``. Ignored when
        ``DemoAuthenticator.password`` is set.
        """,
    )

    @default("password_file")
    def _default_password_file(self):
        state = os.environ.get("KUBEAI_STATE_DIR", ".kubeai")
        return os.path.join(state, PASSWORD_FILE_NAME)

    password = Unicode(
        config=True,
        help="""The demo users' password. Default: read from (or created in) ``password_file``.""",
    )

    @default("password")
    def _default_password(self):
        return read_or_create_password(Path(self.password_file))

    allow_remote_login = Bool(
        False,
        config=True,
        help="""Allow the demo login when the hub listens on a non-loopback address.

        Off by default: the hub then refuses to start, so a demo hub is never
        exposed to a network by mistake. Use a real authenticator instead.
        """,
    )

    def check_allow_config(self):
        super().check_allow_config()
        if not self.allowed_users:
            raise ValueError("DemoAuthenticator needs Authenticator.allowed_users (the demo users)")
        bind_url = getattr(self.parent, "bind_url", "")
        host = urlparse(bind_url).hostname if bind_url else "127.0.0.1"
        if not is_loopback_host(host) and not self.allow_remote_login:
            raise ValueError(
                f"The demo login is for this machine only, but the hub would listen on {bind_url}. "
                "Bind the hub to 127.0.0.1 (the local-mode default), configure a real "
                "authenticator, or set DemoAuthenticator.allow_remote_login = True."
            )
        if len(self.password) < 8:
            raise ValueError("DemoAuthenticator.password must be at least 8 characters")

    async def authenticate(self, handler, data):
        username = self.normalize_username(data.get("username", ""))
        password = data.get("password", "")
        if username not in self.allowed_users:
            self.log.warning("Demo login refused for unknown user %r", username)
            return None
        if not compare_digest(password.encode(), self.password.encode()):
            self.log.warning("Demo login refused for %s: wrong password", username)
            return None
        return username
