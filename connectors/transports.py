"""The WebSocket transports by ``WS_TRANSPORT`` name.

See docs/configuration.md. ``aiohttp`` is the default (it moves a frame in a fraction of the CPU
websockets needs); ``websockets`` is the other. Both keep the contract of
:mod:`connectors.transport`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from connectors.transport import Transport
from connectors.transport_aiohttp import AiohttpTransport
from connectors.transport_websockets import WebsocketsTransport

DEFAULT_TRANSPORT: Final = "aiohttp"

TRANSPORTS: Final[dict[str, Callable[[], Transport]]] = {
    "aiohttp": AiohttpTransport,
    "websockets": WebsocketsTransport,
}
"""Each ``WS_TRANSPORT`` name and the factory of its transport."""


def get_transport(name: str = DEFAULT_TRANSPORT) -> Transport:
    """The transport named ``name`` (case-insensitive). Raises KeyError naming the choices for
    an unknown name (the configuration turns that into its ConfigError)."""
    try:
        factory = TRANSPORTS[name.strip().lower()]
    except KeyError:
        choices = ", ".join(sorted(TRANSPORTS))
        raise KeyError(f"unknown WebSocket transport {name!r} (choose from {choices})") from None
    return factory()
