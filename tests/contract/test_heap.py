"""The CPU trainer keeps freed memory in the process (spaceport.stages.heap), measured through glibc's own
accounting (``mallinfo2``): inside, a large buffer comes from the heap and stays there once freed; outside,
glibc's defaults are back."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from spaceport.stages.heap import _glibc, keep_freed_memory

BIG = 64 * 2**20  # above glibc's largest mmap threshold (32 MB)


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def mallinfo() -> MallInfo2:
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc 2.33 or later (mallinfo2) to observe the heap")
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2()


def test_large_buffers_come_from_the_heap_and_stay_inside_only() -> None:
    mallinfo()  # skips where the heap cannot be observed
    before = mallinfo()
    outside = np.ones(BIG, np.uint8)
    assert mallinfo().hblkhd - before.hblkhd >= BIG  # glibc's default: a mapping of its own
    del outside
    with keep_freed_memory() as held:
        assert held
        start = mallinfo()
        buffer = np.ones(BIG, np.uint8)
        during = mallinfo()
        assert during.hblkhd == start.hblkhd  # no new mapping: from the heap
        assert during.uordblks - start.uordblks >= BIG
        del buffer
        freed = mallinfo()
        assert freed.arena == during.arena  # not trimmed: the next step's buffer reuses these pages
        assert freed.fordblks >= BIG  # free inside the heap
        again = np.ones(BIG, np.uint8)
        assert mallinfo().arena == during.arena
        del again
    after = mallinfo()
    assert after.arena < during.arena  # handed back on exit
    big = np.ones(BIG, np.uint8)
    assert mallinfo().hblkhd - after.hblkhd >= BIG  # and mmap is glibc's choice again
    del big
