"""Active, paced rebalancing of the connections gateways *hold* (docs/rebalancing.md).

- :mod:`.settings` the ``[rebalance]`` config section;
- :mod:`.plan` the pure decision: targets, donors, pacing, hysteresis, the breaker;
- :mod:`.placement` the pure choice of a gateway for a client that was asked to move.

The dispatcher's loop (lease, inputs from the pool, shed orders) builds on these in
:mod:`tcpdispatch.dispatcher.rebalancer`.
"""
