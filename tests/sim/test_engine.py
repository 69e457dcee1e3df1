"""The event engine: modelled time, ordering, seeded streams."""

from tcpdispatch.sim.engine import Engine


def test_events_run_in_time_order_and_ties_in_schedule_order() -> None:
    e = Engine(seed=1)
    seen: list[tuple[float, str]] = []
    e.at(2.0, lambda: seen.append((e.now, "b")))
    e.at(1.0, lambda: seen.append((e.now, "a")))
    e.at(2.0, lambda: seen.append((e.now, "c")))
    e.run(until=10.0)
    assert seen == [(1.0, "a"), (2.0, "b"), (2.0, "c")]
    assert e.now == 10.0


def test_run_stops_at_until_and_keeps_later_events() -> None:
    e = Engine(seed=1)
    seen: list[float] = []
    e.every(1.0, 0.5, 100.0, lambda: seen.append(e.now))
    e.run(until=3.0)
    assert seen == [0.5, 1.5, 2.5]
    assert e.pending() == 1
    e.run(until=4.0)
    assert seen[-1] == 3.5


def test_named_streams_are_reproducible_and_independent() -> None:
    a, b = Engine(seed=7), Engine(seed=7)
    assert [a.rng("x").random() for _ in range(3)] == [b.rng("x").random() for _ in range(3)]
    assert a.rng("x").random() != a.rng("y").random()
    assert Engine(seed=8).rng("x").random() != Engine(seed=7).rng("x").random()


def test_an_event_is_never_scheduled_in_the_past() -> None:
    e = Engine(seed=1)
    seen: list[float] = []
    e.at(5.0, lambda: e.at(1.0, lambda: seen.append(e.now)))
    e.run(until=10.0)
    assert seen == [5.0]


def test_shared_cpu_is_processor_sharing() -> None:
    from tcpdispatch.sim.world import SharedCPU

    e = Engine(seed=1)
    done: list[tuple[int, float]] = []
    cpu = SharedCPU(e, 1.0, lambda c: done.append((c, e.now)))
    for c in range(3):
        cpu.submit(c)  # three rounds at once share the machine: all done at 3 s, not 1, 2, 3
    e.at(10.0, cpu.submit, 9)  # alone: 1 s
    e.run(until=20.0)
    assert [c for c, _ in done] == [0, 1, 2, 9]
    assert [round(t, 9) for _, t in done] == [3.0, 3.0, 3.0, 11.0]
