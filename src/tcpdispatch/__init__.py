"""tcpdispatch: load balancing for long-lived TCP connections.

Three parts: the gateway (holds the long connections), the dispatcher (the
"get-tcp-ip" HTTP service that picks a gateway per client) and the client SDK.
"""

__version__ = "0.1.0"
