"""Prediction ids (lambdaml._ids): random, distinct, and not shared with a forked child."""

import os
import re

from lambdaml._ids import new_id


def test_ids_are_32_hex_digits_and_distinct_across_batches():
    ids = [new_id() for _ in range(1000)]  # several batches of 256
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_hand_out_its_parents_ids():
    new_id()  # the parent holds unused ids now
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next id, to the parent, then exit without running pytest's teardown
        os.write(write, new_id().encode())
        os._exit(0)
    os.waitpid(child, 0)
    from_child = os.read(read, 64).decode()
    assert from_child != new_id() and re.fullmatch(r"[0-9a-f]{32}", from_child)
