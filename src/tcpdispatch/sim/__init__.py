"""``tcpdispatch simulate``: a deterministic discrete-event model of the fleet.

The decisions are the project's own code (``dispatcher.pool.Pool``, the pickers,
``health.state.HealthState``, ``client.policy``); time, the network and the
processes are modelled (``engine``, ``fleet``, ``world``). docs/simulation.md
says which is which, and where the constants come from.
"""
