"""Requests from the hub service to a service's model server, and how their answers are served back.

A model server runs the user's code (``predictor.py``): whatever it answers
is untrusted. So:

- a request goes only to the service's own recorded endpoint (the serving
  backend's ``status().url``), the path re-quoted so that nothing in it can
  change the host or the request line;
- redirects are never followed (tornado follows them by default): a
  predictor answering ``302 Location: http://169.254.169.254/...`` would
  make the hub fetch an internal address and hand the answer to the user.
  A 3xx becomes a 502 saying so, and its ``Location`` is not passed on (a
  browser would follow it);
- answers are served back so that they cannot run script on the hub's
  origin (:func:`sandbox`, :func:`served_content_type`): a strict
  Content-Security-Policy with ``sandbox``, ``nosniff``, and only JSON keeps
  its content type; text becomes ``text/plain`` and anything else a
  download.

One HTTP client per event loop serves every forwarded request (tornado's
own queueing, up to ``MAX_CONCURRENT`` at once): nothing is allocated per
request.
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import quote, urlsplit
from weakref import WeakKeyDictionary

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from ..errors import BadGateway, Unavailable

#: Largest model server answer the hub takes (it is held in memory to be passed on).
MAX_ANSWER_BYTES = 64 * 1024 * 1024
#: Requests in flight to model servers at once; more wait in the client's queue.
MAX_CONCURRENT = 64
#: Seconds a model server has to answer one request.
REQUEST_TIMEOUT = 60

#: Every forwarded answer: no script, no plugins, no framing, no sniffing into HTML.
SANDBOX_CSP = "sandbox; default-src 'none'; frame-ancestors 'none'"

# What may stay unquoted: RFC 3986 path characters (":" for KServe's "name:predict")
# and, in the query, the characters it already has (an existing %-escape stays one).
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?%"
_CHARSET = re.compile(r"charset=([A-Za-z0-9._-]{1,40})", re.IGNORECASE)

_clients: WeakKeyDictionary = WeakKeyDictionary()


def model_server_client() -> AsyncHTTPClient:
    """The event loop's one client for model servers (its own instance: the defaults here are not everyone's)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = AsyncHTTPClient(
            force_instance=True, max_clients=MAX_CONCURRENT, max_body_size=MAX_ANSWER_BYTES,
            defaults={"follow_redirects": False},
        )
    return client


def target_url(base: str, path: str, query: str = "") -> str:
    """``base`` (the recorded endpoint) joined with ``path``: quoted, and refused if it would leave ``base``'s host."""
    url = f"{base.rstrip('/')}/{quote(path.lstrip('/'), safe=_PATH_SAFE)}"
    if query:
        url += "?" + quote(query, safe=_QUERY_SAFE)
    if urlsplit(url)[:2] != urlsplit(base)[:2]:  # cannot happen with the quoting above; kept as the rule itself
        raise BadGateway(f"Refusing to forward to {url!r}: it is not the service's endpoint.")
    return url


async def forward(serving, name: str, method: str, path: str, body: bytes | None, headers: dict, query: str = ""):
    """One request to service ``name``'s model server; a connection refused in a version switch is retried once.

    Returns tornado's response for any status but a redirect (a
    :class:`BadGateway`); :class:`Unavailable` when nothing answered.
    """
    for _ in range(2):
        status = await serving.status(name)
        if not status.url:
            raise Unavailable(f"Service {name!r} is not running: {status.reason or status.state}")
        request = HTTPRequest(target_url(status.url, path, query), method=method, body=body, headers=headers,
                              request_timeout=REQUEST_TIMEOUT, follow_redirects=False, allow_nonstandard_methods=True)
        try:
            response = await model_server_client().fetch(request, raise_error=False)
        except OSError as e:  # refused or reset before an answer
            error = e
            continue
        if 300 <= response.code < 400:
            raise BadGateway(f"The model server of {name!r} answered with a redirect (HTTP {response.code}); "
                             "the hub does not follow redirects from model servers. Fix its predictor.")
        if response.code != 599:
            return response
        error = response.error
        if not isinstance(error, OSError):  # a timeout or an answer too large: asking again would not help
            break
        # Not connected at all (the route switched in that instant): ask again where it is.
    raise Unavailable(f"Service {name!r} did not answer ({error}); try again in a moment.")


def served_content_type(value: str | None) -> tuple[str, bool]:
    """The Content-Type to serve a model server's answer with, and whether as a download (attachment).

    JSON stays JSON; any text becomes ``text/plain`` (its charset kept);
    anything else (HTML, SVG, images, ...) is ``application/octet-stream``
    as an attachment: nothing a browser renders as a document on the hub's origin.
    """
    media = (value or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")
                                       and re.fullmatch(r"application/[a-z0-9.+-]+", media)):
        return media, False
    if media.startswith("text/") or not media:
        charset = _CHARSET.search(value or "")
        return "text/plain; charset=" + (charset.group(1) if charset else "utf-8"), False
    return "application/octet-stream", True


def sandbox(handler) -> None:
    """Headers for every answer that carries a model server's content."""
    handler.set_header("Content-Security-Policy", SANDBOX_CSP)
    handler.set_header("X-Content-Type-Options", "nosniff")
