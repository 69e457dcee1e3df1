"""The test suite's harness: start a real system, wait on it, write its configuration.

One way to start processes for every test and benchmark (``tests/`` is on the path as
pytest's ``pythonpath``; ``bench`` puts it there too, so both import ``harness``):

- :mod:`.waiting`: :func:`wait_until` / :func:`async_wait_until`, :func:`scaled`, :func:`free_port`;
- :mod:`.system`: :func:`start_gateway` / :class:`GatewayHandle` / :func:`restart_gateway`,
  :func:`start_dispatcher` / :func:`launch_dispatcher` / :class:`RealDispatcher` (replicas
  too), :func:`write_dispatcher_config` (the one dispatcher config writer,
  :func:`tcpdispatch.dispatcher.config_writer.dispatcher_toml`, over gateway handles),
  :class:`ProcGroup` for scripts, :func:`get_json`, :func:`haproxy_stats`;
- :mod:`.probe`: :class:`ProbeClient`, a raw protocol client for a gateway.

Process plumbing the demo needs as well (:class:`Proc`, ports, timeout scaling, launching a
gateway) lives in :mod:`tcpdispatch.procs`; nothing in ``src/`` imports this package.
"""

from tcpdispatch.dispatcher.config_writer import dispatcher_toml, write_dispatcher_toml
from tcpdispatch.procs import TCPDISPATCH, Proc

from .probe import ProbeClient
from .system import (
    GatewayHandle,
    ProcGroup,
    RealDispatcher,
    get_json,
    haproxy_stats,
    launch_dispatcher,
    named_gateways,
    post,
    restart_gateway,
    start_dispatcher,
    start_gateway,
    wait_ready,
    write_dispatcher_config,
)
from .waiting import (
    TIMEOUT_FACTOR_ENV,
    async_wait_until,
    free_port,
    scaled,
    timeout_factor,
    wait_until,
)

__all__ = [
    "TCPDISPATCH",
    "TIMEOUT_FACTOR_ENV",
    "GatewayHandle",
    "ProbeClient",
    "Proc",
    "ProcGroup",
    "RealDispatcher",
    "async_wait_until",
    "dispatcher_toml",
    "free_port",
    "get_json",
    "haproxy_stats",
    "launch_dispatcher",
    "named_gateways",
    "post",
    "restart_gateway",
    "scaled",
    "start_dispatcher",
    "start_gateway",
    "timeout_factor",
    "wait_ready",
    "wait_until",
    "write_dispatcher_config",
    "write_dispatcher_toml",
]
