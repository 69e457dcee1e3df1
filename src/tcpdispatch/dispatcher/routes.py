"""The dispatcher's router: every HTTP route, each a handler from a Request to a Response.

``GET /v1/dispatch`` is answered by :class:`~tcpdispatch.dispatcher.service.DispatchService`
(the built-in server calls it inline, before the router); the router lists the pool,
takes admin changes, reports and heartbeats, and serves metrics. It is built with every
dependency it uses. Bad input always gets a 4xx JSON body ``{"error": slug, "detail":
text}`` and changes nothing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tcpdispatch.config import DEFAULT_ZONE, DispatcherConfig, parse_gateway, zone_name_problem
from tcpdispatch.dispatcher.events import SSE_HEADERS, sse_stream
from tcpdispatch.dispatcher.http import JSON_HEADERS, Headers, Request, Response, json_response
from tcpdispatch.dispatcher.metrics import DispatcherMetrics
from tcpdispatch.dispatcher.overview import Overview
from tcpdispatch.dispatcher.pool import Gateway, Pool
from tcpdispatch.dispatcher.ui import StaticFiles
from tcpdispatch.dispatcher.zone_metrics import zone_summary
from tcpdispatch.errors import ConfigError, TcpDispatchError
from tcpdispatch.health import PushTracker, status_to_result
from tcpdispatch.httputil import check_bearer, error_body
from tcpdispatch.ids import gateway_id_problem
from tcpdispatch.store import MemoryStore, SharedGateway, Store, StoreUnavailable

if TYPE_CHECKING:
    from tcpdispatch.dispatcher.rebalancer import Rebalancer
    from tcpdispatch.dispatcher.service import DispatchService

log = logging.getLogger("tcpdispatch.dispatcher.api")

Handler = Callable[..., Awaitable[Response]]
ReloadHook = Callable[[], Awaitable[tuple[bool, str]]]
MAX_STREAMS = 32  # concurrent /v1/events streams per dispatcher


class HTTPError(TcpDispatchError):
    """Raised inside handlers; turned into a JSON error response."""

    def __init__(self, status: int, error: str, detail: str, headers: Headers | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.headers = headers or []


ENABLE_ADMIN = (
    "set [dispatcher] admin_token_file (or the TCPDISPATCH_ADMIN_TOKEN environment variable) "
    "then reload the dispatcher (SIGHUP) or restart it"
)
ENABLE_PUSH = (
    "set [dispatcher] push_token_file (or admin_token_file) and reload the dispatcher (SIGHUP)"
)


class Router:
    """Routes by path and method to handlers; counts every answer by route and status.

    ``store`` shares admin changes and heartbeats between replicas (a private memory
    store when None); ``tracker`` times push heartbeats; ``rebalance`` answers the
    rebalancing routes; ``reload`` re-reads the config file (POST /v1/reload);
    ``on_passive`` hears of a gateway that a client reported unreachable.
    """

    def __init__(
        self,
        config: DispatcherConfig,
        pool: Pool,
        service: DispatchService,
        *,
        store: Store | None = None,
        tracker: PushTracker | None = None,
        rebalance: Rebalancer | None = None,
        reload: ReloadHook | None = None,
        on_passive: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.service = service
        self.stats = service.stats
        self.store: Store = store if store is not None else MemoryStore()
        self.tracker = tracker if tracker is not None else PushTracker(config.health.ttl)
        self.rebalance = rebalance
        self.reload_hook = reload
        self.on_passive = on_passive
        self.metrics_page = DispatcherMetrics(service, pool, rebalance)
        self.static: dict[str, dict[str, Handler]] = {
            "/v1/dispatch": {"GET": self.dispatch},
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
        self.overview = Overview(pool, service.stats, service.answer_times, lambda: rebalance)
        self.per_gateway: dict[str, dict[str, Handler]] = {
            "": {
                "GET": self.get_gateway,
                "PATCH": self.patch_gateway,
                "DELETE": self.delete_gateway,
            },
            "drain": {"POST": self.drain},
            "undrain": {"POST": self.undrain},
        }

    def configure(self, config: DispatcherConfig) -> None:
        """Apply a reloaded config (tokens, body limit, push settings)."""
        self.config = config

    async def handle(self, req: Request) -> Response:
        """The answer to one request; never raises for bad input."""
        path, method = req.path, req.method
        route = self.static.get(path)
        args: tuple[str, ...] = ()
        if route is None and path.startswith("/v1/gateways/"):
            gid, _, action = path[len("/v1/gateways/") :].partition("/")
            route = self.per_gateway.get(action)
            args = (gid,)
        elif route is None and path.startswith("/ui/"):
            route, args = {"GET": self.ui_file}, (path[4:],)
        try:
            if route is None:
                raise HTTPError(404, "not_found", f"no route for {path}")
            # HEAD on /v1/dispatch would issue a ticket and count a dispatch: only GET is allowed.
            handler = route.get(method) or (
                route.get("GET") if method == "HEAD" and path != "/v1/dispatch" else None
            )
            if handler is None:
                allow = ", ".join(sorted(route)).encode()
                raise HTTPError(
                    405,
                    "method_not_allowed",
                    f"{method} is not allowed on {path}",
                    [(b"allow", allow)],
                )
            response = await handler(req, *args)
        except HTTPError as exc:
            response = Response(
                exc.status, [*JSON_HEADERS, *exc.headers], error_body(exc.error, exc.detail)
            )
        if path != "/v1/dispatch":  # dispatches have their own counters
            route_key = "/ui/{file}" if path.startswith("/ui/") else "/v1/gateways/{id}"
            key = (path if not args else route_key, response.status)
            self.stats.other[key] = self.stats.other.get(key, 0) + 1
        if method == "HEAD":
            response.body = b""
        return response

    async def dispatch(self, req: Request) -> Response:
        """GET /v1/dispatch when it reaches the router (e.g. an absolute-form request target)."""
        status, retry_after, body = self.service.dispatch_bytes(
            req.query, req.client[0], req.headers
        )
        headers = (
            JSON_HEADERS
            if retry_after is None
            else [*JSON_HEADERS, (b"retry-after", retry_after.encode())]
        )
        return Response(status, headers, body)

    # ------------------------------------------------------------ helpers

    def _bearer(self, req: Request, token: str | None, what: str, enable: str) -> None:
        """Secure by default: no token configured refuses everyone (403, saying how to enable
        it); otherwise a missing or wrong ``Authorization: Bearer`` is 401."""
        if not token:
            raise HTTPError(
                403,
                "forbidden",
                f"{what} is disabled because no token is configured; to enable it, {enable}",
            )
        if not check_bearer(req.header(b"authorization") or b"", token):
            raise HTTPError(
                401,
                "unauthorized",
                f"{what} requires 'Authorization: Bearer <token>'",
                [(b"www-authenticate", b'Bearer realm="tcpdispatch"')],
            )

    def _admin(self, req: Request) -> None:
        self._bearer(req, self.config.admin_token, "the admin API", ENABLE_ADMIN)

    def _reader(self, req: Request) -> None:
        """The optional read token (``read_token_file``) for what lists gateway addresses;
        the admin token is accepted too. Without a read token these routes are open."""
        cfg = self.config
        if cfg.read_token is None:
            return
        given = req.header(b"authorization") or b""
        if check_bearer(given, cfg.read_token) or (
            cfg.admin_token and check_bearer(given, cfg.admin_token)
        ):
            return
        raise HTTPError(
            401,
            "unauthorized",
            "this endpoint requires 'Authorization: Bearer <token>' with the read token "
            "(read_token_file) or the admin token",
            [(b"www-authenticate", b'Bearer realm="tcpdispatch"')],
        )

    def _body(self, req: Request) -> Any:
        """Decode a JSON object body, enforcing the size limit and the content type."""
        limit = self.config.max_body
        if len(req.body) > limit:
            raise HTTPError(413, "body_too_large", f"request body exceeds {limit} bytes")
        ctype = req.header(b"content-type")
        if ctype and ctype.split(b";")[0].strip().lower() != b"application/json":
            raise HTTPError(415, "unsupported_media_type", "request body must be application/json")
        raw = req.body
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

    async def _write(self, op: Awaitable[bool], missing: HTTPError) -> None:
        """Run one admin write through the store first; 503 when it cannot take writes."""
        try:
            ok = await op
        except StoreUnavailable as exc:
            raise HTTPError(
                503,
                "store_unavailable",
                f"{exc}; admin changes are refused until it returns "
                "(dispatching continues from the last known state)",
                [(b"retry-after", b"1")],
            ) from None
        if not ok:
            raise missing

    def _gateway(self, gid: str) -> Gateway:
        gw = self.pool.get(gid)
        if gw is None:
            raise self._unknown(gid)
        return gw

    @staticmethod
    def _unknown(gid: str) -> HTTPError:
        return HTTPError(404, "unknown_gateway", f"no gateway with id {gid!r}")

    # ------------------------------------------------------------ pool and admin

    async def list_gateways(self, req: Request) -> Response:
        self._reader(req)
        pool = self.pool
        doc: dict[str, Any] = {
            "policy": pool.policy,
            "panic": pool.panic,
            "gateways": [pool.describe(g) for g in pool.gateways.values()],
        }
        if pool.zones is not None:
            doc["zones"] = zone_summary(pool)
        return json_response(200, doc)

    async def get_gateway(self, req: Request, gid: str) -> Response:
        self._reader(req)
        return json_response(200, self.pool.describe(self._gateway(gid)))

    async def add_gateway(self, req: Request) -> Response:
        self._admin(req)
        doc = self._body(req)
        try:
            gcfg = parse_gateway(doc, file="request body", prefix="gateway")
        except ConfigError as exc:
            raise HTTPError(400, "bad_gateway_spec", f"{exc.key}: {exc.reason}") from None
        exists = HTTPError(409, "gateway_exists", f"gateway {gcfg.id!r} already exists")
        if self.pool.get(gcfg.id) is not None:
            raise exists
        await self._write(self.store.add(SharedGateway(gcfg, "admin")), exists)
        # A store sync may have applied it while we awaited the write.
        gw = self.pool.get(gcfg.id) or self.pool.add(gcfg, "admin")
        log.info("admin: added gateway %s at %s", gcfg.id, gcfg.address)
        return json_response(201, self.pool.describe(gw))

    async def patch_gateway(self, req: Request, gid: str) -> Response:
        self._admin(req)
        self._gateway(gid)
        doc = self._body(req)
        unknown = (
            sorted(set(doc) - {"weight", "zone"}) if isinstance(doc, dict) else ["(not an object)"]
        )
        if unknown or not doc:
            raise HTTPError(
                400,
                "bad_request",
                f"unknown field {unknown[0]!r}; only 'weight' and 'zone' can be changed"
                if unknown
                else "give 'weight' and/or 'zone'",
            )
        w = doc.get("weight")
        if w is not None and (
            isinstance(w, bool)
            or not isinstance(w, (int, float))
            or not math.isfinite(w)
            or not 0 <= w <= 1_000_000
        ):
            raise HTTPError(
                400, "bad_request", f"weight must be a number from 0 to 1000000, got {w!r}"
            )
        zone = doc.get("zone")
        if "zone" in doc and (why := zone_name_problem(zone)):
            raise HTTPError(400, "bad_request", f"zone {why}, got {zone!r}")
        if w is not None:
            await self._write(self.store.set_weight(gid, float(w)), self._unknown(gid))
        if zone is not None:
            await self._write(self.store.set_zone(gid, zone), self._unknown(gid))
        gw = self._gateway(
            gid
        )  # again: a store sync may have removed it while we awaited the write
        if w is not None:
            gw = self.pool.set_weight(gid, float(w))
            log.info("admin: gateway %s weight -> %s", gid, w)
        if zone is not None:
            gw = self.pool.set_zone(gid, zone)
            log.info("admin: gateway %s zone -> %s", gid, zone)
        return json_response(200, self.pool.describe(gw))

    async def delete_gateway(self, req: Request, gid: str) -> Response:
        self._admin(req)
        self._gateway(gid)
        await self._write(self.store.remove(gid), self._unknown(gid))
        self.pool.remove(gid)
        log.info("admin: removed gateway %s", gid)
        return json_response(200, {"removed": gid})

    async def drain(self, req: Request, gid: str) -> Response:
        return await self._set_drain(req, gid, True)

    async def undrain(self, req: Request, gid: str) -> Response:
        return await self._set_drain(req, gid, False)

    async def _set_drain(self, req: Request, gid: str, draining: bool) -> Response:
        self._admin(req)
        self._gateway(gid)
        await self._write(self.store.set_drain(gid, draining), self._unknown(gid))
        self._gateway(gid)  # again: a store sync may have removed it while we awaited the write
        gw = self.pool.set_drain(gid, draining)
        log.info("admin: gateway %s %s", gid, "drained" if draining else "undrained")
        return json_response(200, self.pool.describe(gw))

    async def reload(self, req: Request) -> Response:
        self._admin(req)
        if self.reload_hook is None:
            raise HTTPError(
                409, "no_config_file", "this dispatcher was not started from a config file"
            )
        ok, detail = await self.reload_hook()
        if not ok:
            raise HTTPError(422, "reload_refused", detail)
        return json_response(200, {"reloaded": True, "detail": detail})

    # ------------------------------------------------------------ reports from clients and gateways

    async def report(self, req: Request) -> Response:
        doc = self._body(req)
        gid = doc.get("gateway_id")
        why = gateway_id_problem(gid)
        if why:
            raise HTTPError(400, "bad_request", f"gateway_id {why}")
        err = doc.get("error", "")
        if not isinstance(err, str) or len(err) > 500:
            raise HTTPError(400, "bad_request", "error must be a string of at most 500 characters")
        if not self.pool.passive_failure(gid):
            raise HTTPError(404, "unknown_gateway", f"no gateway with id {gid!r}")
        if self.on_passive is not None:
            self.on_passive(gid)
        return json_response(202, {"accepted": True})

    async def heartbeat(self, req: Request) -> Response:
        self._bearer(req, self.config.push_token, "push heartbeats", ENABLE_PUSH)
        doc = self._body(req)
        gid = doc.get("id")
        why = gateway_id_problem(gid)
        if why:
            raise HTTPError(400, "bad_request", f"heartbeat field 'id' {why}")
        try:
            result = status_to_result(doc)
        except ValueError as exc:
            raise HTTPError(400, "bad_status", str(exc)) from None
        zone = doc.get("zone")  # the gateway's --zone (docs/zones.md); absent: leave it as it is
        if zone is not None and (why := zone_name_problem(zone)):
            raise HTTPError(400, "bad_status", f"heartbeat field 'zone' {why}")
        pool = self.pool
        gw = pool.get(gid)
        if gw is None:
            if not self.config.register_unknown:
                raise HTTPError(
                    404,
                    "unknown_gateway",
                    f"gateway {gid!r} is not in the pool and register_unknown is off",
                )
            try:
                gcfg = parse_gateway(
                    {
                        "id": gid,
                        "address": result.address or "",
                        "check": "push",
                        "zone": zone or DEFAULT_ZONE,
                    },
                    file="heartbeat",
                    prefix="heartbeat",
                )
            except ConfigError as exc:
                raise HTTPError(
                    400, "bad_status", f"cannot register {gid!r}: {exc.reason}"
                ) from None
            try:  # registration is shared too, but a Redis outage must not refuse heartbeats
                await self.store.add(SharedGateway(gcfg, "push"))
            except StoreUnavailable:
                pass
            gw = pool.get(gid) or pool.add(gcfg, "push")
            log.info("push: registered gateway %s at %s", gid, gcfg.address)
        elif not gw.push:
            raise HTTPError(
                409, "not_push", f"gateway {gid!r} is checked by {gw.config.check}, not push"
            )
        elif zone is not None and gw.config.zone != zone:
            try:
                await self.store.set_zone(gid, zone)
            except StoreUnavailable:
                pass
            if pool.get(gid) is not None:
                pool.set_zone(gid, zone)
                log.info("push: gateway %s reports zone %s", gid, zone)
        self.tracker.record(gid)
        pool.on_result(gid, result)
        self.store.heartbeat(gid, doc, self.config.health.ttl)
        return Response(204)

    # ------------------------------------------------------------ rebalancing (docs/rebalancing.md)

    def _rebalancer(self) -> Rebalancer:
        rb = self.rebalance
        if rb is None:
            raise HTTPError(409, "rebalance_unavailable", "this dispatcher runs no rebalancer")
        return rb

    async def rebalance_status(self, req: Request) -> Response:
        self._reader(req)  # lists gateway ids and targets, like /v1/gateways
        return json_response(200, self._rebalancer().describe())

    async def rebalance_pause(self, req: Request) -> Response:
        return await self._rebalance_switch(req, "pause")

    async def rebalance_resume(self, req: Request) -> Response:
        return await self._rebalance_switch(req, "resume")

    async def rebalance_trigger(self, req: Request) -> Response:
        return await self._rebalance_switch(req, "trigger")

    async def _rebalance_switch(self, req: Request, action: str) -> Response:
        self._admin(req)
        rb = self._rebalancer()
        if action == "trigger" and rb.settings.mode == "off":
            raise HTTPError(409, "rebalance_off", 'rebalancing is off ([rebalance] mode = "off")')
        try:
            if action == "trigger":
                await rb.trigger()
            else:
                await rb.set_paused(action == "pause")
        except StoreUnavailable as exc:
            raise HTTPError(
                503,
                "store_unavailable",
                f"{exc}; the switch is shared through it",
                [(b"retry-after", b"1")],
            ) from None
        log.info("admin: rebalance %s", action)
        return json_response(202 if action == "trigger" else 200, rb.describe())

    # ------------------------------------------------------------ observability

    async def ui_redirect(self, req: Request) -> Response:
        return Response(308, [(b"location", b"/ui/"), (b"cache-control", b"no-store")])

    async def ui_file(self, req: Request, name: str) -> Response:
        """The dashboard's static files; the page holds no data, the read-token rule applies
        to what it fetches (``/v1/events``)."""
        answer = self.ui.get(name, req.header(b"if-none-match") or b"")
        if answer is None:
            raise HTTPError(404, "not_found", f"no dashboard file {name!r}")
        return Response(*answer)

    async def events(self, req: Request) -> Response:
        """Server-Sent Events for the dashboard (docs/dashboard.md); the read-token rule."""
        self._reader(req)
        bus = self.pool.events
        if len(bus.subscribers) >= MAX_STREAMS:
            raise HTTPError(
                503,
                "too_many_streams",
                f"{MAX_STREAMS} event streams are open already",
                [(b"retry-after", b"5")],
            )
        return Response(200, SSE_HEADERS, stream=sse_stream(bus, self.overview.snapshot))

    async def metrics(self, req: Request) -> Response:
        self._reader(req)
        body, ctype = self.metrics_page.render()
        return Response(200, [(b"content-type", ctype.encode())], body)

    async def healthz(self, req: Request) -> Response:
        pool = self.pool
        doc = {
            "status": "ok",
            "policy": pool.policy,
            "gateways": pool.counts(),
            "panic": pool.panic,
            "hot_path": self.service.hot_path,
        }
        if self.store.shared:
            doc["store"] = self.store.describe()
        return json_response(200, doc)


__all__ = ["HTTPError", "Router"]
