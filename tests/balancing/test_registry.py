"""Policy registry: names, factories, option validation."""

from __future__ import annotations

import pytest

from tcpdispatch.balancing import DEFAULT_POLICY, POLICIES, Picker, get_policy, make_picker


def test_all_policies_registered() -> None:
    assert set(POLICIES) == {
        "round_robin",
        "random",
        "ip_hash",
        "consistent_hash",
        "least_conn",
        "p2c",
        "load",
    }
    assert DEFAULT_POLICY == "p2c"
    for name, factory in POLICIES.items():
        picker = factory([])
        assert isinstance(picker, Picker)
        assert picker.name == name
        assert get_policy(name) is factory


def test_unknown_policy_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown balancing policy 'fastest'") as err:
        get_policy("fastest")
    for name in POLICIES:
        assert name in str(err.value)


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        POLICIES["x"] = POLICIES["p2c"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("policy", "options", "message"),
    [
        ("consistent_hash", {"epsilon": -0.1}, "epsilon"),
        ("consistent_hash", {"epsilon": float("inf")}, "epsilon"),
        ("load", {"floor": 0}, "floor"),
        ("load", {"floor": 1.5}, "floor"),
        ("p2c", {"epsilon": 0.2}, "p2c"),
    ],
)
def test_bad_options_raise_value_error(policy: str, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_picker(policy, [], **options)


def test_good_options_apply() -> None:
    assert make_picker("consistent_hash", [], epsilon=0.5).epsilon == 0.5
    assert make_picker("consistent_hash", [], epsilon=None).epsilon is None
    assert make_picker("load", [], floor=0.2).floor == 0.2


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_bad_candidates_are_refused_at_build(policy: str, pool) -> None:
    with pytest.raises(ValueError, match="weight"):
        make_picker(policy, pool([1, 0]))
    with pytest.raises(ValueError, match="duplicate"):
        make_picker(policy, pool([1]) + pool([1]))
