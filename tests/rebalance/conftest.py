"""The dispatcher tests' config builder, shared with the rebalancer tests."""

from dispatcher.conftest import make_config

__all__ = ["make_config"]
