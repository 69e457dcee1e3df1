"""The "get-tcp-ip" dispatcher: pool of gateways, health, picking, tickets, HTTP API.

- :mod:`.pool` — gateways, health/load/drain state, immutable pickers.
- :mod:`.app` — the raw ASGI app with the dispatch fast path.
- :mod:`.routes` — admin, reports, heartbeats, listing, metrics, healthz.
- :mod:`.server` — process lifecycle (granian embedded, health checker, SIGHUP).
"""
