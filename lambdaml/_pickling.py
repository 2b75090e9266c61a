"""Pickled code that is the same bytes in every process, so that its hash is a version id.

A model's version id is the hash of its pickled code (``artifacts.content_version``):
the same code deployed from two processes must hash alike. Two things differed:

* pydantic keeps, in every instance, the set of fields that were given
  (``__pydantic_fields_set__``); Python orders a set of strings by their hashes, which
  change from process to process (``PYTHONHASHSEED``). ``StableModel`` pickles it sorted.
* cloudpickle gives each class it pickles by value (a class-form model) a random id of
  the process (uuid4), so that unpickling it twice in one process makes one class.
  ``for_hashing`` blanks those ids; the stored pickle keeps them.
"""

from __future__ import annotations

from typing import Any

import cloudpickle
from pydantic import BaseModel

_FIELDS_SET = "__pydantic_fields_set__"


class StableModel(BaseModel):
    """A ``BaseModel`` that pickles its fields set sorted."""

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        return {**state, _FIELDS_SET: sorted(state[_FIELDS_SET])}

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__({**state, _FIELDS_SET: set(state[_FIELDS_SET])})


def for_hashing(code: bytes) -> bytes:
    """``code`` with cloudpickle's per-process class ids blanked (written for cloudpickle 3.1)."""
    # Private to cloudpickle, and the only record of the ids it chose; without it (another
    # cloudpickle) versions are per process again, which tests/test_package.py catches.
    tracker = getattr(cloudpickle.cloudpickle, "_DYNAMIC_CLASS_TRACKER_BY_CLASS", {})
    for class_id in list(tracker.values()):
        code = code.replace(class_id.encode(), b"0" * len(class_id))
    return code
