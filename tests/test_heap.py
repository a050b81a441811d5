"""FreezeHeap: the start-up heap is frozen (hidden from full collections) and a reload refreezes it."""

import gc

from schoolproxy.proxy.heap import FreezeHeap, freeze_heap


def test_running_freezes_the_heap_and_a_refreeze_still_frees_old_cycles():
    try:
        FreezeHeap().running()
        assert gc.get_freeze_count() > 1000

        class Node:
            pass
        a, b = Node(), Node()
        a.other, b.other = b, a          # a cycle, as an old configuration may hold
        gc.freeze()                      # frozen with the rest, as after start-up
        gone = []
        import weakref
        weakref.finalize(a, gone.append, "a")
        del a, b
        freeze_heap()                    # what a reload does
        assert gone == ["a"]             # unfrozen, collected, then the rest frozen again
    finally:
        gc.unfreeze()
