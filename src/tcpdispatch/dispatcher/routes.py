"""Every route except the dispatch fast path: pool listing, admin, reports, heartbeats, metrics.

Handlers return ``(status, headers, body)``; bad input always gets a 4xx JSON
body ``{"error": slug, "detail": text}`` and changes nothing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tcpdispatch.config import GatewayConfig, parse_gateway
from tcpdispatch.dispatcher.app import JSON_HEADERS, Receive, Scope, json_body
from tcpdispatch.dispatcher.events import SSE_HEADERS, sse_stream
from tcpdispatch.dispatcher.overview import Overview
from tcpdispatch.dispatcher.pool import Gateway
from tcpdispatch.dispatcher.ui import StaticFiles
from tcpdispatch.errors import ConfigError, TcpDispatchError
from tcpdispatch.httputil import check_bearer, error_body
from tcpdispatch.ids import gateway_id_problem
from tcpdispatch.store import MemoryStore, SharedGateway, Store, StoreUnavailable

if TYPE_CHECKING:
    from tcpdispatch.dispatcher.app import DispatcherApp
    from tcpdispatch.rebalance.controller import Rebalancer

log = logging.getLogger("tcpdispatch.dispatcher.api")

# The body is bytes, or an async iterator of byte chunks written as they come (/v1/events).
Response = tuple[int, list[tuple[bytes, bytes]], "bytes | AsyncIterator[bytes]"]
MAX_STREAMS = 32  # concurrent /v1/events streams per dispatcher


class HTTPError(TcpDispatchError):
    """Raised inside handlers; turned into a JSON error response."""

    def __init__(self, status: int, error: str, detail: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.headers = headers or []


_MEMORY_STORE = MemoryStore()
ENABLE_ADMIN = ("set [dispatcher] admin_token_file (or the TCPDISPATCH_ADMIN_TOKEN environment variable) "
                "then reload the dispatcher (SIGHUP) or restart it")
ENABLE_PUSH = "set [dispatcher] push_token_file (or admin_token_file) and reload the dispatcher (SIGHUP)"


def _authorization(scope: Scope) -> bytes:
    for k, v in scope["headers"]:
        if k == b"authorization":
            return bytes(v)
    return b""


def _json(status: int, doc: Any) -> Response:
    return status, JSON_HEADERS, json_body(doc)


class Router:
    """Routes by path and method; knows the app for config, pool and stats."""

    def __init__(self, app: DispatcherApp) -> None:
        self.app = app
        self.static: dict[str, dict[str, Callable[..., Awaitable[Response]]]] = {
            "/v1/gateways": {"GET": self.list_gateways, "POST": self.add_gateway},
            "/v1/report": {"POST": self.report},
            "/v1/heartbeat": {"POST": self.heartbeat},
            "/v1/reload": {"POST": self.reload},
            "/v1/rebalance": {"GET": self.rebalance_status},
            "/v1/rebalance/pause": {"POST": self.rebalance_pause},
            "/v1/rebalance/resume": {"POST": self.rebalance_resume},
            "/v1/rebalance/trigger": {"POST": self.rebalance_trigger},
            "/metrics": {"GET": self.metrics},
            "/healthz": {"GET": self.healthz},
            "/v1/events": {"GET": self.events},
            "/ui": {"GET": self.ui_redirect},
        }
        self.ui = StaticFiles()
        self.overview = Overview(app.pool, app.stats, self._latency, lambda: app.rebalance)
        self.per_gateway: dict[str, dict[str, Callable[..., Awaitable[Response]]]] = {
            "": {"GET": self.get_gateway, "PATCH": self.patch_gateway, "DELETE": self.delete_gateway},
            "drain": {"POST": self.drain},
            "undrain": {"POST": self.undrain},
        }

    async def handle(self, scope: Scope, receive: Receive) -> Response:
        path: str = scope["path"]
        method: str = scope["method"]
        route = self.static.get(path)
        args: tuple[str, ...] = ()
        if route is None and path.startswith("/v1/gateways/"):
            gid, _, action = path[len("/v1/gateways/"):].partition("/")
            route = self.per_gateway.get(action)
            args = (gid,)
        elif route is None and path.startswith("/ui/"):
            route, args = {"GET": self.ui_file}, (path[4:],)
        try:
            if path == "/v1/dispatch":
                # GET is answered by the app's fast path before the router; anything else
                # (HEAD included: it would issue a ticket and count a dispatch) is refused.
                raise HTTPError(405, "method_not_allowed", f"{method} is not allowed on {path}",
                                [(b"allow", b"GET")])
            if route is None:
                raise HTTPError(404, "not_found", f"no route for {path}")
            handler = route.get(method) or (route.get("GET") if method == "HEAD" else None)
            if handler is None:
                allow = ", ".join(sorted(route)).encode()
                raise HTTPError(405, "method_not_allowed", f"{method} is not allowed on {path}",
                                [(b"allow", allow)])
            status, headers, body = await handler(scope, receive, *args)
        except HTTPError as exc:
            status = exc.status
            headers = [*JSON_HEADERS, *exc.headers]
            body = error_body(exc.error, exc.detail)
        key = (path if not args else "/ui/{file}" if path.startswith("/ui/") else "/v1/gateways/{id}", status)
        self.app.stats.other[key] = self.app.stats.other.get(key, 0) + 1
        if method == "HEAD":
            body = b""
        return status, headers, body

    # ------------------------------------------------------------ helpers

    def _bearer(self, scope: Scope, token: str | None, what: str, enable: str) -> None:
        """Secure by default: no token configured refuses everyone (403, saying how to enable
        it); otherwise a missing or wrong ``Authorization: Bearer`` is 401."""
        if not token:
            raise HTTPError(403, "forbidden", f"{what} is disabled because no token is configured; "
                                              f"to enable it, {enable}")
        if not check_bearer(_authorization(scope), token):
            raise HTTPError(401, "unauthorized", f"{what} requires 'Authorization: Bearer <token>'",
                            [(b"www-authenticate", b'Bearer realm="tcpdispatch"')])

    def _admin(self, scope: Scope) -> None:
        self._bearer(scope, self.app.config.admin_token, "the admin API", ENABLE_ADMIN)

    def _reader(self, scope: Scope) -> None:
        """The optional read token (``read_token_file``) for what lists gateway addresses;
        the admin token is accepted too. Without a read token these routes are open."""
        cfg = self.app.config
        if cfg.read_token is None:
            return
        given = _authorization(scope)
        if check_bearer(given, cfg.read_token) or (cfg.admin_token and check_bearer(given, cfg.admin_token)):
            return
        raise HTTPError(401, "unauthorized",
                        "this endpoint requires 'Authorization: Bearer <token>' with the read token "
                        "(read_token_file) or the admin token",
                        [(b"www-authenticate", b'Bearer realm="tcpdispatch"')])

    async def _body(self, scope: Scope, receive: Receive) -> Any:
        """Read and decode a JSON body, enforcing the size limit and the content type."""
        limit = self.app.config.max_body
        ctype = b""
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    if int(v) > limit:
                        raise HTTPError(413, "body_too_large", f"request body exceeds {limit} bytes")
                except ValueError:
                    raise HTTPError(400, "bad_request", "invalid Content-Length") from None
            elif k == b"content-type":
                ctype = v
        if ctype and ctype.split(b";")[0].strip().lower() != b"application/json":
            raise HTTPError(415, "unsupported_media_type", "request body must be application/json")
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise HTTPError(400, "bad_request", "client disconnected while sending the body")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, "body_too_large", f"request body exceeds {limit} bytes")
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        raw = b"".join(chunks)
        if not raw.strip():
            raise HTTPError(400, "bad_request", "request body is empty; expected a JSON object")
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, "bad_json", f"request body is not valid JSON: {exc}") from None
        except RecursionError:  # e.g. 50,000 nested "[": refuse it like any other bad JSON
            raise HTTPError(400, "bad_json", "request body is nested too deeply") from None
        if not isinstance(doc, dict):
            raise HTTPError(400, "bad_request", "request body must be a JSON object")
        return doc

    @property
    def store(self) -> Store:
        """The shared state store (set by the server); the memory store when there is none."""
        return self.app.store or _MEMORY_STORE

    async def _write(self, op: Awaitable[bool], missing: HTTPError) -> None:
        """Run one admin write through the store first; 503 when it cannot take writes."""
        try:
            ok = await op
        except StoreUnavailable as exc:
            raise HTTPError(503, "store_unavailable",
                            f"{exc}; admin changes are refused until it returns "
                            "(dispatching continues from the last known state)",
                            [(b"retry-after", b"1")]) from None
        if not ok:
            raise missing

    def _gateway(self, gid: str) -> Gateway:
        gw = self.app.pool.get(gid)
        if gw is None:
            raise self._unknown(gid)
        return gw

    @staticmethod
    def _unknown(gid: str) -> HTTPError:
        return HTTPError(404, "unknown_gateway", f"no gateway with id {gid!r}")

    # ------------------------------------------------------------ pool and admin

    async def list_gateways(self, scope: Scope, receive: Receive) -> Response:
        self._reader(scope)
        pool = self.app.pool
        return _json(200, {
            "policy": pool.policy, "panic": pool.panic,
            "gateways": [pool.describe(g) for g in pool.gateways.values()],
        })

    async def get_gateway(self, scope: Scope, receive: Receive, gid: str) -> Response:
        self._reader(scope)
        return _json(200, self.app.pool.describe(self._gateway(gid)))

    async def add_gateway(self, scope: Scope, receive: Receive) -> Response:
        self._admin(scope)
        doc = await self._body(scope, receive)
        try:
            gcfg = parse_gateway(doc, file="request body", prefix="gateway")
        except ConfigError as exc:
            raise HTTPError(400, "bad_gateway_spec", f"{exc.key}: {exc.reason}") from None
        exists = HTTPError(409, "gateway_exists", f"gateway {gcfg.id!r} already exists")
        if self.app.pool.get(gcfg.id) is not None:
            raise exists
        await self._write(self.store.add(SharedGateway(gcfg, "admin")), exists)
        # A store sync may have applied it while we awaited the write.
        gw = self.app.pool.get(gcfg.id) or self.app.pool.add(gcfg, "admin")
        log.info("admin: added gateway %s at %s", gcfg.id, gcfg.address)
        return _json(201, self.app.pool.describe(gw))

    async def patch_gateway(self, scope: Scope, receive: Receive, gid: str) -> Response:
        self._admin(scope)
        self._gateway(gid)
        doc = await self._body(scope, receive)
        unknown = sorted(set(doc) - {"weight"})
        if unknown:
            raise HTTPError(400, "bad_request", f"unknown field {unknown[0]!r}; only 'weight' can be changed")
        w = doc.get("weight")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or not 0 <= w <= 1_000_000:
            raise HTTPError(400, "bad_request", f"weight must be a number from 0 to 1000000, got {w!r}")
        await self._write(self.store.set_weight(gid, float(w)), self._unknown(gid))
        self._gateway(gid)  # again: a store sync may have removed it while we awaited the write
        gw = self.app.pool.set_weight(gid, float(w))
        log.info("admin: gateway %s weight -> %s", gid, w)
        return _json(200, self.app.pool.describe(gw))

    async def delete_gateway(self, scope: Scope, receive: Receive, gid: str) -> Response:
        self._admin(scope)
        self._gateway(gid)
        await self._write(self.store.remove(gid), self._unknown(gid))
        self.app.pool.remove(gid)
        log.info("admin: removed gateway %s", gid)
        return _json(200, {"removed": gid})

    async def drain(self, scope: Scope, receive: Receive, gid: str) -> Response:
        return await self._set_drain(scope, gid, True)

    async def undrain(self, scope: Scope, receive: Receive, gid: str) -> Response:
        return await self._set_drain(scope, gid, False)

    async def _set_drain(self, scope: Scope, gid: str, draining: bool) -> Response:
        self._admin(scope)
        self._gateway(gid)
        await self._write(self.store.set_drain(gid, draining), self._unknown(gid))
        self._gateway(gid)  # again: a store sync may have removed it while we awaited the write
        gw = self.app.pool.set_drain(gid, draining)
        log.info("admin: gateway %s %s", gid, "drained" if draining else "undrained")
        return _json(200, self.app.pool.describe(gw))

    async def reload(self, scope: Scope, receive: Receive) -> Response:
        self._admin(scope)
        if self.app.reload_hook is None:
            raise HTTPError(409, "no_config_file", "this dispatcher was not started from a config file")
        ok, detail = await self.app.reload_hook()
        if not ok:
            raise HTTPError(422, "reload_refused", detail)
        return _json(200, {"reloaded": True, "detail": detail})

    # ------------------------------------------------------------ reports from clients and gateways

    async def report(self, scope: Scope, receive: Receive) -> Response:
        doc = await self._body(scope, receive)
        gid = doc.get("gateway_id")
        why = gateway_id_problem(gid)
        if why:
            raise HTTPError(400, "bad_request", f"gateway_id {why}")
        err = doc.get("error", "")
        if not isinstance(err, str) or len(err) > 500:
            raise HTTPError(400, "bad_request", "error must be a string of at most 500 characters")
        if not self.app.pool.passive_failure(gid):
            raise HTTPError(404, "unknown_gateway", f"no gateway with id {gid!r}")
        if self.app.on_passive is not None:
            self.app.on_passive(gid)
        return _json(202, {"accepted": True})

    async def heartbeat(self, scope: Scope, receive: Receive) -> Response:
        from tcpdispatch.health import status_to_result

        self._bearer(scope, self.app.config.push_token, "push heartbeats", ENABLE_PUSH)
        doc = await self._body(scope, receive)
        gid = doc.get("id")
        why = gateway_id_problem(gid)
        if why:
            raise HTTPError(400, "bad_request", f"heartbeat field 'id' {why}")
        try:
            result = status_to_result(doc)
        except ValueError as exc:
            raise HTTPError(400, "bad_status", str(exc)) from None
        pool = self.app.pool
        gw = pool.get(gid)
        if gw is None:
            if not self.app.config.register_unknown:
                raise HTTPError(404, "unknown_gateway",
                                f"gateway {gid!r} is not in the pool and register_unknown is off")
            try:
                gcfg = parse_gateway({"id": gid, "address": result.address or "", "check": "push"},
                                     file="heartbeat", prefix="heartbeat")
            except ConfigError as exc:
                raise HTTPError(400, "bad_status", f"cannot register {gid!r}: {exc.reason}") from None
            try:  # registration is shared too, but a Redis outage must not refuse heartbeats
                await self.store.add(SharedGateway(gcfg, "push"))
            except StoreUnavailable:
                pass
            gw = pool.get(gid) or pool.add(gcfg, "push")
            log.info("push: registered gateway %s at %s", gid, gcfg.address)
        elif not gw.push:
            raise HTTPError(409, "not_push", f"gateway {gid!r} is checked by {gw.config.check}, not push")
        tracker = self.app.push_tracker
        if tracker is not None:
            tracker.record(gid)
        pool.on_result(gid, result)
        self.store.heartbeat(gid, doc, self.app.config.health.ttl)
        return 204, [], b""

    # ------------------------------------------------------------ rebalancing (docs/rebalancing.md)

    def _rebalancer(self) -> Rebalancer:
        rb = self.app.rebalance
        if rb is None:
            raise HTTPError(409, "rebalance_unavailable", "this dispatcher runs no rebalancer")
        return rb

    async def rebalance_status(self, scope: Scope, receive: Receive) -> Response:
        self._reader(scope)  # lists gateway ids and targets, like /v1/gateways
        return _json(200, self._rebalancer().describe())

    async def rebalance_pause(self, scope: Scope, receive: Receive) -> Response:
        return await self._rebalance_switch(scope, "pause")

    async def rebalance_resume(self, scope: Scope, receive: Receive) -> Response:
        return await self._rebalance_switch(scope, "resume")

    async def rebalance_trigger(self, scope: Scope, receive: Receive) -> Response:
        return await self._rebalance_switch(scope, "trigger")

    async def _rebalance_switch(self, scope: Scope, action: str) -> Response:
        self._admin(scope)
        rb = self._rebalancer()
        if action == "trigger" and rb.settings.mode == "off":
            raise HTTPError(409, "rebalance_off", 'rebalancing is off ([rebalance] mode = "off")')
        try:
            if action == "trigger":
                await rb.trigger()
            else:
                await rb.set_paused(action == "pause")
        except StoreUnavailable as exc:
            raise HTTPError(503, "store_unavailable", f"{exc}; the switch is shared through it",
                            [(b"retry-after", b"1")]) from None
        log.info("admin: rebalance %s", action)
        return _json(202 if action == "trigger" else 200, rb.describe())

    # ------------------------------------------------------------ observability

    async def ui_redirect(self, scope: Scope, receive: Receive) -> Response:
        return 308, [(b"location", b"/ui/"), (b"cache-control", b"no-store")], b""

    async def ui_file(self, scope: Scope, receive: Receive, name: str) -> Response:
        """The dashboard's static files; the page holds no data, the read-token rule applies
        to what it fetches (``/v1/events``)."""
        inm = next((v for k, v in scope["headers"] if k == b"if-none-match"), b"")
        answer = self.ui.get(name, inm)
        if answer is None:
            raise HTTPError(404, "not_found", f"no dashboard file {name!r}")
        return answer

    async def events(self, scope: Scope, receive: Receive) -> Response:
        """Server-Sent Events for the dashboard (docs/dashboard.md); the read-token rule."""
        self._reader(scope)
        bus = self.app.pool.events
        if len(bus.subscribers) >= MAX_STREAMS:
            raise HTTPError(503, "too_many_streams", f"{MAX_STREAMS} event streams are open already",
                            [(b"retry-after", b"5")])
        return 200, SSE_HEADERS, sse_stream(bus, self.overview.snapshot)

    def _latency(self) -> tuple[list[int], float]:
        """Dispatch answer times so far, both hot paths (as ``/metrics`` adds them)."""
        lat = self.app.stats.latency
        counts, total = list(lat.counts), lat.total
        if self.app.fast is not None:
            c_counts, c_total = self.app.fast.latency()
            counts = [a + b for a, b in zip(counts, c_counts, strict=True)]
            total += c_total
        return counts, total

    async def metrics(self, scope: Scope, receive: Receive) -> Response:
        from tcpdispatch.dispatcher.metrics import render

        self._reader(scope)
        body, ctype = render(self.app)
        return 200, [(b"content-type", ctype.encode())], body

    async def healthz(self, scope: Scope, receive: Receive) -> Response:
        pool = self.app.pool
        doc = {"status": "ok", "policy": pool.policy, "gateways": pool.counts(), "panic": pool.panic,
               "hot_path": self.app.hot_path}
        if self.store.shared:
            doc["store"] = self.store.describe()
        return _json(200, doc)


__all__ = ["GatewayConfig", "HTTPError", "Router"]
