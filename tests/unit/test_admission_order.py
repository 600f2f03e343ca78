"""Max-min fair admission: who goes next when a worker slot frees up (admission.choose)."""

from sandboxctl.executions.admission import choose

LIMITS = {1: 2, 2: 2, 3: 2}


def test_an_account_with_nothing_in_flight_goes_before_one_holding_its_share():
    held = [("a2", 1), ("a3", 1), ("c1", 3)]  # account 1's runs are older
    assert choose({1: 1, 2: 1}, held, room=1, limits=LIMITS) == ["c1"]


def test_a_newcomer_is_admitted_while_two_busy_accounts_hold_their_caps():
    held = [("a3", 1), ("b3", 2), ("c1", 3)]
    assert choose({1: 2, 2: 2}, held, room=8, limits=LIMITS) == ["c1"]


def test_room_is_shared_round_robin_in_order_of_the_oldest_held_run():
    held = [("a1", 1), ("a2", 1), ("a3", 1), ("b1", 2), ("b2", 2)]
    limits = {1: 5, 2: 5}
    assert choose({}, held, room=4, limits=limits) == ["a1", "b1", "a2", "b2"]


def test_a_lone_account_uses_the_room_up_to_its_own_cap():
    held = [(f"a{index}", 1) for index in range(5)]
    assert choose({}, held, room=10, limits=LIMITS) == ["a0", "a1"]


def test_nothing_is_admitted_without_room():
    assert choose({1: 1}, [("b1", 2)], room=0, limits=LIMITS) == []
