"""Every exception class the package defines descends from ``TcpDispatchError`` (one error tree)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import tcpdispatch
from tcpdispatch.errors import TcpDispatchError

# Modules that need an optional extra or a compiled part; skipped when absent.
OPTIONAL = ("tcpdispatch.store.redis_store", "tcpdispatch._speedups")


def _modules() -> list[object]:
    found = []
    for info in pkgutil.walk_packages(tcpdispatch.__path__, "tcpdispatch."):
        if info.name.endswith("__main__"):  # importing it runs the CLI
            continue
        try:
            found.append(importlib.import_module(info.name))
        except ImportError:
            if info.name not in OPTIONAL:
                raise
    return found


def test_every_exception_the_package_defines_is_in_the_tree() -> None:
    strays = []
    for module in _modules():
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if (
                cls.__module__ == module.__name__
                and issubclass(cls, BaseException)
                and not issubclass(cls, TcpDispatchError)
            ):
                strays.append(f"{module.__name__}.{name}")
    assert not strays, f"outside TcpDispatchError: {strays}"


def test_the_walk_sees_the_private_errors_too() -> None:
    # Guards the test above against walking nothing.
    names = {
        f"{m.__name__}.{n}" for m in _modules() for n, _ in inspect.getmembers(m, inspect.isclass)
    }
    assert {
        "tcpdispatch.client.session._Refused",
        "tcpdispatch.dispatcher.httpserver._Limit",
    } <= names
