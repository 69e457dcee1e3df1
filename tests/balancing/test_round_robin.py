"""round_robin: nginx's smooth weighted round robin."""

from __future__ import annotations

from tcpdispatch.balancing import PickRequest, make_picker

REQ = PickRequest()


def seq(picker, n: int) -> str:
    return "".join(picker.pick(REQ)[0].id[-1] for _ in range(n))


def test_nginx_sequence_for_5_1_1(pool) -> None:
    # The example in nginx's commit introducing smooth WRR: {a a b a c a a}.
    cands = pool([5, 1, 1])
    picker = make_picker("round_robin", cands)
    assert seq(picker, 14) == "00102000010200"


def test_equal_weights_rotate(pool) -> None:
    picker = make_picker("round_robin", pool([1, 1, 1]))
    assert seq(picker, 6) == "012012"


def test_fractional_weights_from_slow_start(pool) -> None:
    picker = make_picker("round_robin", pool([1, 0.25]))
    got = seq(picker, 500)
    assert got.count("1") == 100


def test_full_gateway_sits_out_without_stealing_turns(pool) -> None:
    cands = pool([1, 1, 1], loads=[0, 3, 0], limits=[None, 3, None])
    picker = make_picker("round_robin", cands)
    assert seq(picker, 6) == "020202"


def test_alternates_do_not_use_up_turns(pool) -> None:
    cands = pool([5, 1, 1])
    picker = make_picker("round_robin", cands)
    primaries = "".join(picker.pick(REQ, k=3)[0].id[-1] for _ in range(14))
    assert primaries == "00102000010200"
    got = picker.pick(REQ, k=3)
    assert len({c.id for c in got}) == 3
