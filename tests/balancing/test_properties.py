"""Property tests: whatever the pool, a pick is distinct, usable, and empty only when nothing is."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tcpdispatch.balancing import POLICIES, Candidate, LoadCounter, PickRequest, make_picker

gateway = st.tuples(
    st.floats(min_value=0.01, max_value=100, allow_nan=False),  # weight
    st.integers(min_value=0, max_value=20),  # reported load
    st.one_of(st.none(), st.integers(min_value=0, max_value=20)),  # limit
    st.one_of(st.none(), st.floats(min_value=0, max_value=1)),  # utilization
)


@settings(max_examples=150, deadline=None)
@given(
    policy=st.sampled_from(sorted(POLICIES)),
    spec=st.lists(gateway, max_size=12),
    k=st.integers(min_value=1, max_value=5),
    key=st.text(max_size=8),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_pick_is_distinct_usable_and_complete(policy, spec, k, key, seed) -> None:
    cands = [
        Candidate(f"g{i}", "h", 1, w, limit, LoadCounter(reported=load, utilization=u))
        for i, (w, load, limit, u) in enumerate(spec)
    ]
    usable = {c.id for c in cands if not c.full}
    picker = make_picker(policy, cands, rng=random.Random(seed))
    issued_before = sum(c.load.issued for c in cands)
    got = picker.pick(PickRequest(client_id=key, client_ip=key), k=k)
    ids = [c.id for c in got]
    assert len(ids) == len(set(ids))
    assert set(ids) <= usable
    assert len(got) == min(k, len(usable))
    assert sum(c.load.issued for c in cands) == issued_before + (1 if got else 0)
