"""The connection lifecycle as one explicit transition table.

States: HANDSHAKE -> AUTHENTICATING -> OPEN -> DRAINING -> CLOSED.

* server: HANDSHAKE waits for HELLO; AUTHENTICATING has the HELLO and waits
  for the application to answer WELCOME or ERROR.
* client: HANDSHAKE has not sent HELLO; AUTHENTICATING waits for WELCOME.

DRAINING means the gateway has sent RECONNECT: data and heartbeats still flow
until the client leaves. A (role, state, direction, opcode) with no entry is a
protocol error: RemoteProtocolError when received, LocalProtocolError when sent.
"""

from __future__ import annotations

from enum import Enum

from tcpdispatch.protocol.frames import Opcode


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


class State(Enum):
    HANDSHAKE = "handshake"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    DRAINING = "draining"
    CLOSED = "closed"


class Direction(Enum):
    SEND = "send"
    RECV = "recv"


S, C = Role.SERVER, Role.CLIENT
SEND, RECV = Direction.SEND, Direction.RECV
HS, AUTH, OPEN, DRAIN, CLOSED = (
    State.HANDSHAKE,
    State.AUTHENTICATING,
    State.OPEN,
    State.DRAINING,
    State.CLOSED,
)
O = Opcode

TRANSITIONS: dict[tuple[Role, State, Direction, Opcode], State] = {
    # --- server (gateway) ---
    (S, HS, RECV, O.HELLO): AUTH,
    (S, AUTH, SEND, O.WELCOME): OPEN,
    (S, OPEN, RECV, O.PING): OPEN,
    (S, OPEN, SEND, O.PONG): OPEN,
    (S, OPEN, RECV, O.DATA): OPEN,
    (S, OPEN, SEND, O.DATA): OPEN,
    (S, OPEN, SEND, O.RECONNECT): DRAIN,
    (S, DRAIN, RECV, O.PING): DRAIN,
    (S, DRAIN, SEND, O.PONG): DRAIN,
    (S, DRAIN, RECV, O.DATA): DRAIN,
    (S, DRAIN, SEND, O.DATA): DRAIN,
    # --- client ---
    (C, HS, SEND, O.HELLO): AUTH,
    (C, AUTH, RECV, O.WELCOME): OPEN,
    (C, OPEN, SEND, O.PING): OPEN,
    (C, OPEN, RECV, O.PONG): OPEN,
    (C, OPEN, SEND, O.DATA): OPEN,
    (C, OPEN, RECV, O.DATA): OPEN,
    (C, OPEN, RECV, O.RECONNECT): DRAIN,
    (C, DRAIN, SEND, O.PING): DRAIN,
    (C, DRAIN, RECV, O.PONG): DRAIN,
    (C, DRAIN, SEND, O.DATA): DRAIN,
    (C, DRAIN, RECV, O.DATA): DRAIN,
}

# ERROR and BYE end the connection from any live state, in either direction.
for _role in Role:
    for _state in (HS, AUTH, OPEN, DRAIN):
        for _dir in Direction:
            TRANSITIONS[(_role, _state, _dir, O.ERROR)] = CLOSED
            TRANSITIONS[(_role, _state, _dir, O.BYE)] = CLOSED


def next_state(role: Role, state: State, direction: Direction, opcode: Opcode) -> State | None:
    """The state after this event, or None when the table forbids it."""
    return TRANSITIONS.get((role, state, direction, opcode))
