"""Prediction ids (lambdaml._ids): 32 hex digits, in time order, distinct, not shared with a forked child."""

import os
import re
import time

from lambdaml._ids import new_id


def test_ids_are_32_hex_digits_distinct_across_batches_and_start_with_the_time():
    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(1000)]  # several batches of 256
    after = time.time_ns() // 1_000_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert all(before <= int(i[:12], 16) <= after for i in ids)
    assert [i[:12] for i in ids] == sorted(i[:12] for i in ids)  # the records' index grows at its end


def test_a_forked_child_does_not_hand_out_its_parents_random_bits():
    new_id()  # the parent holds unused random bits now
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next id, to the parent, then exit without running pytest's teardown
        os.write(write, new_id().encode())
        os._exit(0)
    os.waitpid(child, 0)
    from_child = os.read(read, 64).decode()
    assert from_child[12:] != new_id()[12:] and re.fullmatch(r"[0-9a-f]{32}", from_child)
