"""The gateway: an asyncio server holding long-lived client connections.

See docs/gateway.md. Application code subclasses :class:`Handler`.
"""

from tcpdispatch.gateway.config import GatewayConfig
from tcpdispatch.gateway.handlers import BroadcastHandler, EchoHandler, Handler, Hub, Session

__all__ = ["BroadcastHandler", "EchoHandler", "GatewayConfig", "Handler", "Hub", "Session"]
