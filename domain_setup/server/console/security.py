"""What every console page is sent with, and what every console form must bring.

* Headers on every response under ``/admin`` (pages, errors, images): a strict
  Content-Security-Policy with no script at all (``default-src 'none'``; the console
  runs no JavaScript, so text a researcher wrote cannot become one),
  ``X-Frame-Options: DENY``, no sniffing, no caching, no referrer to other sites.
* The session cookie: ``HttpOnly``, ``SameSite=Strict``, ``Path=/``, an expiry, and over
  TLS ``Secure`` with the ``__Host-`` prefix (no domain attribute, so no other host can
  set it). Its name carries the port: cookies do not tell ports apart, and two domains
  on one host must not overwrite each other's sessions.
* A state-changing request (every POST) must come from the console's own origin
  (``Origin``, else ``Referer``, and ``Sec-Fetch-Site`` when the browser sends it) and
  carry the session's CSRF token in its form.
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlsplit

CONSOLE_PREFIX = "/admin"
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self'; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
MAX_FORM_BYTES = 256 * 1024  # the largest form: a federation card pasted as text


def is_console_path(path: str) -> bool:
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


class ConsoleHeaders:
    """ASGI middleware: the headers above on every response under /admin."""

    def __init__(self, app: Any):
        self.app = app
        self._headers = [(k.encode(), v.encode()) for k, v in HEADERS.items()]

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not is_console_path(scope.get("path", "")):
            return await self.app(scope, receive, send)

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", [])
                        if k.lower().decode("latin-1") not in HEADERS]
                message = {**message, "headers": kept + self._headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def cookie_name(port: int, tls: bool, purpose: str = "session") -> str:
    """The console's cookie name on this domain (``__Host-`` only over TLS)."""
    return f"{'__Host-' if tls else ''}pneumosyft-console-{purpose}-{port}"


def set_cookie(response: Any, name: str, value: str, *, tls: bool, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=tls, httponly=True,
                        samesite="strict")


def own_origin(scheme: str, host_header: str) -> str:
    return f"{scheme}://{host_header}".lower()


def same_origin_problem(headers: Any, scheme: str) -> str | None:
    """Why a state-changing request does not come from this console's origin (None: it does)."""
    expected = own_origin(scheme, headers.get("host", ""))
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return "a form of another origin may not act on this console"
    origin = headers.get("origin")
    if origin is not None:
        return None if origin.lower() == expected else \
            "a form of another origin may not act on this console"
    referer = headers.get("referer")
    if referer is not None:
        parts = urlsplit(referer)
        return None if f"{parts.scheme}://{parts.netloc}".lower() == expected else \
            "a form of another origin may not act on this console"
    return None  # no browser: the CSRF token alone decides
