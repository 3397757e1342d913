"""plan_claims: which records of a batch go on, given the claims believed to exist."""

from __future__ import annotations

from parallel_batch.store.claims import Claim, ClaimPlan, plan_claims


def test_unique_keys_without_claims_all_go_on_and_are_claimed_in_record_order() -> None:
    plan = plan_claims(["7", "3", "9"], [10, 12, 15], {})
    assert plan == ClaimPlan(loads=[0, 1, 2], new=[("7", 10), ("3", 12), ("9", 15)])


def test_a_key_twice_in_the_batch_keeps_its_first_record() -> None:
    plan = plan_claims(["7", "3", "7", "9"], [10, 12, 15, 16], {})
    assert plan == ClaimPlan(
        loads=[0, 1, 3], new=[("7", 10), ("3", 12), ("9", 16)], duplicates={2: ("7", 10)}
    )


def test_claims_of_other_records_decide_by_line() -> None:
    """An earlier claim wins over the batch's record; the batch's record displaces a later one."""
    earlier, later = Claim(5, "0"), Claim(40, "2")
    plan = plan_claims(["7", "3", "9"], [10, 12, 15], {"7": earlier, "9": later})
    assert plan == ClaimPlan(
        loads=[1, 2],
        new=[("3", 12)],
        expected={"7": earlier, "9": later},
        displaced={"9": (later, 15)},
        duplicates={0: ("7", 5)},
    )


def test_that_spans_of_integer_keys_keep_jobs_apart() -> None:
    """Test that a batch's span is its smallest and largest key, that the spans of two jobs
    never meet (the largest bigint of one job below the smallest of the next), and that keys
    which are not str() of a bigint do not pack."""
    from parallel_batch.store.claim_ranges import job_span, pack

    found = pack(["5", "-3", "12"], [1, 2, 3])
    assert found is not None
    assert (found.keys, found.low, found.high) == ("{5,-3,12}", -3, 12)
    low, high = job_span(7, found.low, found.high)
    assert high - low == 15
    top = job_span(1, 2**63 - 1, 2**63 - 1)
    bottom = job_span(2, -(2**63), -(2**63))
    assert top[1] < bottom[0]
    for keys in (["007"], ["-0"], ["+1"], ["1,2"], [str(2**63)], ["x"], []):
        assert pack(keys, list(range(len(keys)))) is None, keys


def test_that_new_claims_cross_to_the_parent_with_their_range_row_made() -> None:
    """Test that a batch's new claims, packed in the worker, cross a pickle with the range row's
    arrays made (the parent only sends them), read as (key, line) pairs in record order, and
    that claims added afterwards are packed again."""
    import pickle

    from parallel_batch.store.claim_ranges import NewClaims, Packed

    plan = plan_claims(["7", "3", "9"], [10, 12, 15], {})
    assert isinstance(plan.new, NewClaims)
    assert plan.new.packed() == Packed("{7,3,9}", "{10,12,15}", 3, 9)
    crossed = pickle.loads(pickle.dumps(plan.new))
    assert crossed._packed == Packed("{7,3,9}", "{10,12,15}", 3, 9)  # not made again
    assert list(crossed) == [("7", 10), ("3", 12), ("9", 15)] and crossed == plan.new
    assert crossed[1] == ("3", 12) and crossed[1:] == [("3", 12), ("9", 15)]
    crossed.extend([("1", 20)])
    assert crossed.packed() == Packed("{7,3,9,1}", "{10,12,15,20}", 1, 9)
    assert NewClaims(["x"], [2]).packed() is None  # not an integer: the job claims by key
    assert not NewClaims() and NewClaims().packed() is None


def test_that_what_claimed_records_became_is_an_array_made_once_per_outcome() -> None:
    """Test that the outputs array lists each claim's outcome in key order (1 where the record
    became one row), crosses a pickle made, and is made again when the parent's commit
    changes an outcome (a row the target refused)."""
    import pickle

    from parallel_batch.store.claim_ranges import NewClaims

    new = NewClaims(["7", "3", "9"], [10, 12, 15])
    assert new.outputs_array({}) is None
    assert new.outputs_array({"3": 0, "9": 2}) == "{1,0,2}"
    crossed = pickle.loads(pickle.dumps(new))
    assert crossed._made == ({"3": 0, "9": 2}, "{1,0,2}")
    assert crossed.outputs_array({"3": 0, "9": 2}) == "{1,0,2}"
    assert crossed.outputs_array({"3": 0, "9": 2, "7": -1}) == "{-1,0,2}"


def test_that_new_claims_copied_before_they_are_packed_pack_after() -> None:
    """Test that claims pickled or copied before packed() ran still pack (the "not yet" marker
    is not the same object after a copy), and that a key too long for a bigint never packs
    (int() of a key of thousands of digits would raise instead)."""
    import copy
    import pickle

    from parallel_batch.store.claim_ranges import NewClaims, Packed, pack

    for moved in (
        pickle.loads(pickle.dumps(NewClaims(["1", "2"], [5, 6]))),
        copy.deepcopy(NewClaims(["1", "2"], [5, 6])),
    ):
        assert moved.packed() == Packed("{1,2}", "{5,6}", 1, 2)
    unpackable = pickle.loads(pickle.dumps(NewClaims(["x"], [5])))
    assert unpackable.packed() is None
    assert pickle.loads(pickle.dumps(unpackable))._packed is None  # a None that is an answer
    assert pack(["1" * 5000], [2]) is None and pack([str(2**64)], [2]) is None
