"""The run skeleton's garbage collection (skills_cli/training/trainer.py): only between steps, with what the
first step leaves frozen out of later passes, and the collector as it was once the run ends."""

from __future__ import annotations

import gc
import weakref

from skills_cli.training.trainer import collections_between_steps


class Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the collector frees it


def frozen(obj) -> bool:
    """Whether the collector tracks obj in its permanent generation: gc.get_objects() lists generations 0-2 only.
    Asked by identity, because the permanent generation's size also falls whenever a frozen object elsewhere in
    the process is freed by its reference count (a suite-wide count is no measure)."""
    return gc.is_tracked(obj) and not any(o is obj for o in gc.get_objects())


def test_garbage_is_collected_between_steps_and_the_first_steps_survivors_are_frozen():
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with collections_between_steps() as between_steps:
        assert not gc.isenabled()  # no automatic pass can land inside a step
        between_steps()  # before step 1
        kept = Node()  # what step 1 builds and keeps (a compiled model, say)
        assert not frozen(kept)
        between_steps()  # before step 2: the survivors are frozen
        assert frozen(kept)
        kept_later = Node()  # what step 2 builds and keeps
        garbage = weakref.ref(Node())  # a cycle dropped during step 2
        assert garbage() is not None
        between_steps()  # before step 3: a young-generation pass frees it, and freezes nothing more
        assert garbage() is None and not frozen(kept_later)
    assert gc.isenabled() and gc.get_freeze_count() == 0 and not frozen(kept)
