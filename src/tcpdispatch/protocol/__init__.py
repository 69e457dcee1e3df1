"""The tcpdispatch wire protocol: a sans-I/O codec and connection state machine."""

from tcpdispatch.protocol.connection import Connection
from tcpdispatch.protocol.frames import (
    DEFAULT_MAX_FRAME,
    VERSION,
    Bye,
    Data,
    Error,
    Frame,
    FrameDecoder,
    Hello,
    Opcode,
    Ping,
    Pong,
    Reconnect,
    Welcome,
    encode,
)
from tcpdispatch.protocol.states import Role, State

__all__ = [
    "DEFAULT_MAX_FRAME",
    "VERSION",
    "Bye",
    "Connection",
    "Data",
    "Error",
    "Frame",
    "FrameDecoder",
    "Hello",
    "Opcode",
    "Ping",
    "Pong",
    "Reconnect",
    "Role",
    "State",
    "Welcome",
    "encode",
]
