"""The pure residency policy: LRU eviction by bytes, never a version with in-flight jobs."""

from server.residency import Slot, plan_residency


def slots(*specs):
    return [Slot(key, nbytes, last_used, in_flight) for key, nbytes, last_used, in_flight in specs]


def test_already_resident_needs_nothing():
    plan = plan_residency(slots(("a@1", 10, 1.0, 0)), "a@1", 10, budget_bytes=5)
    assert plan.load == () and plan.evict == ()


def test_fits_in_free_space_without_eviction():
    plan = plan_residency(slots(("a@1", 40, 1.0, 0), ("b@1", 40, 2.0, 0)), "c@1", 20, budget_bytes=100)
    assert plan.load == ("c@1",) and plan.evict == () and plan.fits


def test_evicts_least_recently_used_first_and_only_as_much_as_needed():
    resident = slots(("a@1", 40, 3.0, 0), ("b@1", 40, 1.0, 0), ("c@1", 40, 2.0, 0))
    plan = plan_residency(resident, "d@1", 40, budget_bytes=120)
    assert plan.evict == ("b@1",) and plan.load == ("d@1",) and plan.fits
    plan = plan_residency(resident, "d@1", 70, budget_bytes=120)
    assert plan.evict == ("b@1", "c@1") and plan.fits


def test_never_evicts_in_flight_versions():
    resident = slots(("a@1", 50, 1.0, 2), ("b@1", 50, 2.0, 0))
    plan = plan_residency(resident, "c@1", 50, budget_bytes=100)
    assert plan.evict == ("b@1",) and plan.fits
    busy = slots(("a@1", 50, 1.0, 1), ("b@1", 50, 2.0, 3))
    plan = plan_residency(busy, "c@1", 50, budget_bytes=100)
    assert plan.evict == () and plan.load == ("c@1",) and not plan.fits  # soft budget: load anyway


def test_eager_mode_loads_only_into_free_space():
    resident = slots(("a@1", 80, 1.0, 0))
    assert plan_residency(resident, "b@1", 30, 100, allow_evict=False).load == ()
    assert plan_residency(resident, "b@1", 20, 100, allow_evict=False).load == ("b@1",)


def test_ties_in_last_use_break_by_key():
    resident = slots(("b@1", 10, 1.0, 0), ("a@1", 10, 1.0, 0))
    assert plan_residency(resident, "c@1", 10, 20).evict == ("a@1",)
