"""The "get-tcp-ip" dispatcher: pool of gateways, health, picking, tickets, HTTP API.

- :mod:`.pool` — gateways, health/load/drain state, immutable pickers.
- :mod:`.service` — :class:`~.service.DispatchService`: validate, pick, sign, answer.
- :mod:`.fastpath` — the same dispatch answered by the C accelerator.
- :mod:`.http` — the Request and Response values the server and router exchange.
- :mod:`.routes` — the router: admin, reports, heartbeats, listing, metrics, healthz.
- :mod:`.httpserver` — the built-in HTTP/1.1 server (asyncio + httptools).
- :mod:`.server` — process lifecycle: builds everything, health checker, SIGHUP.
"""
