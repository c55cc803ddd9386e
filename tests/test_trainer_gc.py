"""The run skeleton's garbage collection (skills_cli/training/trainer.py): only between steps, with what the
first step leaves frozen out of later passes, and the collector as it was once the run ends."""

from __future__ import annotations

import gc
import weakref

from skills_cli.training.trainer import collections_between_steps


class Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the collector frees it


def test_garbage_is_collected_between_steps_and_the_first_steps_survivors_are_frozen():
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with collections_between_steps() as between_steps:
        assert not gc.isenabled()  # no automatic pass can land inside a step
        between_steps()  # before step 1
        kept = Node()  # what step 1 builds and keeps (a compiled model, say)
        between_steps()  # before step 2: the survivors are frozen
        assert gc.get_freeze_count() > 0 and gc.is_tracked(kept)
        frozen = gc.get_freeze_count()
        garbage = weakref.ref(Node())  # a cycle dropped during step 2
        assert garbage() is not None
        between_steps()  # before step 3: a young-generation pass frees it
        assert garbage() is None and gc.get_freeze_count() == frozen
    assert gc.isenabled() and gc.get_freeze_count() == 0
