"""Who may talk to ``lyra view``: requests from the viewer's own page only.

A page open in the user's browser (any site) can open a WebSocket to ``ws://127.0.0.1:8080`` and,
through viser's protocol, press the viewer's buttons; a site whose name resolves to 127.0.0.1 (DNS
rebinding) can even read the viewer's HTTP responses. So every HTTP request and WebSocket upgrade is
checked before viser sees it:

- ``Host`` must name the viewer by address: an IP literal, ``localhost``, or a name given with
  ``--host``. A rebinding site's own name is refused.
- ``Origin``, when present (browsers always send it on a WebSocket upgrade and on cross-site
  requests), must be ``http(s)://`` plus that same ``Host``: the viewer's own page. Another port,
  another site, or ``null`` (a sandboxed frame, a local file) is refused.

A refused request gets HTTP 403 and never reaches viser. Clients that send no ``Origin`` are
programs, not web pages (they could read the scene file directly anyway).

viser 1.1 builds its websockets server inside its server thread with a ``process_request`` hook that
serves its web client; ``protect_viser`` wraps the ``serve`` that viser's module calls (only there, not
for the rest of the process) so our check runs first and viser's hook after it.
"""

from __future__ import annotations

import http
import ipaddress
import threading
import types
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import viser.infra._infra as viser_infra
import websockets
import websockets.asyncio.server
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

LOOPBACK_NAMES = ("localhost",)
_extra_hosts: set[str] = set()  # names passed with --host, allowed in Host headers
_lock = threading.Lock()


def is_loopback(host: str) -> bool:
    """``host`` (a bind address or name) reaches this machine only."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, str]:  # "host:port", "[::1]:port" -> (host, port)
    parts = urlsplit(f"//{value}")
    try:
        port = str(parts.port) if parts.port is not None else ""
    except ValueError:  # a port that is not a number
        return "", ""
    return (parts.hostname or ""), port


def host_allowed(host_header: str | None) -> bool:
    """A ``Host`` header that names this viewer by address, not by some site's DNS name."""
    if not host_header:
        return False
    name, _ = _split_host(host_header)
    if not name:
        return False
    if name in LOOPBACK_NAMES or name in _extra_hosts:
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def origin_allowed(origin: str | None, host_header: str | None) -> bool:
    """No ``Origin`` (not a web page), or exactly the viewer's own page, ``http(s)://<Host>``."""
    if origin is None:
        return True
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not host_header or parts.path not in ("", "/"):
        return False
    origin_host, origin_port = _split_host(parts.netloc)
    host, port = _split_host(host_header)
    default = "443" if parts.scheme == "https" else "80"
    return origin_host == host and (origin_port or default) == (port or default)


def refusal(request: Request) -> Response | None:
    """HTTP 403 for a request from anywhere but the viewer's own page; None lets it through."""
    host = request.headers.get("Host")
    origin = request.headers.get("Origin")
    if host_allowed(host) and origin_allowed(origin, host):
        return None
    body = (f"lyra view refuses this request: Host {host!r}, Origin {origin!r}. Open the viewer at the "
            "address `lyra view` printed (docs/viewer.md).\n").encode()
    return Response(http.HTTPStatus.FORBIDDEN, "Forbidden",
                    Headers({"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body))}), body)


def _guarded(process_request: Callable | None) -> Callable:
    async def check_then_serve(connection: Any, request: Request) -> Response | None:
        refused = refusal(request)
        if refused is not None:
            return refused
        if process_request is None:
            return None
        response = process_request(connection, request)
        return await response if hasattr(response, "__await__") else response
    return check_then_serve


def _serve(*args: Any, process_request: Callable | None = None, **kwargs: Any):
    return websockets.asyncio.server.serve(*args, process_request=_guarded(process_request), **kwargs)


def _module_view(module: types.ModuleType, **overrides: Any) -> types.ModuleType:
    """A stand-in for ``module`` that returns ``overrides`` and delegates every other attribute."""
    view = types.ModuleType(module.__name__)
    view.__dict__.update(overrides)
    view.__getattr__ = lambda name: getattr(module, name)  # type: ignore[method-assign]
    return view


def protect_viser(extra_hosts: Iterable[str] = ()) -> None:
    """Make every viser server started from now on refuse foreign ``Host`` / ``Origin`` (idempotent).

    Args:
        extra_hosts: host names (not addresses) the viewer was bound to with ``--host``; requests
            naming them in ``Host`` are accepted too.
    """
    with _lock:
        _extra_hosts.update(h.lower() for h in extra_hosts if h and not _is_address(h))
        if getattr(viser_infra.websockets, "_lyra_guarded", False):
            return
        server_view = _module_view(websockets.asyncio.server, serve=_serve)
        asyncio_view = _module_view(websockets.asyncio, server=server_view)
        view = _module_view(websockets, asyncio=asyncio_view, _lyra_guarded=True)
        viser_infra.websockets = view  # viser's module calls websockets.asyncio.server.serve(...)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False
