"""The one error tree of tcpdispatch.

::

    TcpDispatchError
     ├── ConfigError              config file / CLI / admin input is invalid (file, key, reason)
     │    └── SettingError         a value outside its declaration (settings.py; also a ValueError)
     ├── ProtocolError            wire protocol violation; carries an ErrorCode
     │    ├── RemoteProtocolError  the peer sent bad bytes or a frame out of order
     │    └── LocalProtocolError   we tried to send something the state forbids (our bug)
     ├── TicketError              a connect ticket was refused; carries an ErrorCode
     ├── DispatchError            client SDK: no gateway could be obtained from any source
     ├── SecureHandshakeError     client: the encrypted handshake failed or was refused
     │                            (code, reason)
     ├── ClientError              client SDK, per connection
     │    ├── ClientClosed         the client was closed; nothing more can be sent (client.py)
     │    └── HandshakeFailed      one connect attempt did not reach WELCOME (session.py)
     ├── HTTPError                dispatcher: a request gets this status and JSON error (routes.py)
     └── StoreUnavailable         the shared store cannot take a write now (store/base.py)

Private errors used for control flow inside one module (``_Limit`` in the HTTP server,
``_Refused`` and ``_RoundFailed`` in the client) descend from this tree too, so that nothing
the package raises on purpose escapes a caller's ``except TcpDispatchError``.

Every ``ErrorCode`` travels on the wire in ERROR frames, so its numbers are part
of the protocol (see docs/protocol.md) and must never be reused.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Codes carried by ERROR frames.

    1xx: framing, 2xx: tickets, 3xx: limits, 4xx: encryption (docs/protocol.md section 9),
    5xx: server.
    """

    BAD_VERSION = 100
    UNKNOWN_OPCODE = 101
    FRAME_TOO_LARGE = 102
    TRUNCATED_FRAME = 103
    UNEXPECTED_FRAME = 104
    MALFORMED_FRAME = 105

    TICKET_REQUIRED = 200
    TICKET_FORGED = 201
    TICKET_EXPIRED = 202
    TICKET_WRONG_GATEWAY = 203
    TICKET_REPLAYED = 204
    TICKET_WRONG_CLIENT = 205

    OVERLOADED = 300
    IP_LIMIT = 301
    HANDSHAKE_TIMEOUT = 302
    IDLE_TIMEOUT = 303
    DRAINING = 304

    ENCRYPTION_REQUIRED = 400
    UNKNOWN_SERVER_KEY = 401
    HANDSHAKE_FAILED = 402
    RESUME_REJECTED = 403
    DECRYPT_FAILED = 404

    INTERNAL = 500

    @property
    def slug(self) -> str:
        """Lower-case name used in logs, metrics labels and JSON."""
        return self.name.lower()


class TcpDispatchError(Exception):
    """Base of every error tcpdispatch raises on purpose."""


class ConfigError(TcpDispatchError):
    """Invalid configuration; names where (file and key) and why."""

    def __init__(self, reason: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = ": ".join(p for p in (file, key) if p)
        super().__init__(f"{where}: {reason}" if where else reason)


class ProtocolError(TcpDispatchError):
    """A wire-protocol violation, with the code to send in the ERROR frame."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code.slug} ({int(code)}): {reason}")


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol: bad framing, unknown opcode, frame out of order."""


class LocalProtocolError(ProtocolError):
    """This side tried an action its current state forbids (a programming error)."""


class TicketError(TcpDispatchError):
    """A connect ticket was refused (forged, expired, other gateway, replayed, other client)."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code.slug}: {reason}")


class SecureHandshakeError(TcpDispatchError):
    """Client side: the gateway refused the encrypted handshake or could not prove its key.

    ``code`` is the ErrorCode number (the gateway's, or HANDSHAKE_FAILED when this side
    found the answer forged); ``authenticated`` is False for refusals that arrived in clear
    before any key was proven (an active attacker could have forged them).
    """

    def __init__(self, code: int, reason: str, *, authenticated: bool = False) -> None:
        self.code = code
        self.reason = reason
        self.authenticated = authenticated
        super().__init__(reason)


class DispatchError(TcpDispatchError):
    """The client could not obtain a usable gateway from any source."""


class ClientError(TcpDispatchError):
    """Base of the client SDK's per-connection errors."""
