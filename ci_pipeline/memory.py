"""How the process gives memory back between stages.

A run holds one stage's frames and Arrow tables at a time and lets go of them before the next stage, but freed
memory only leaves the process when the allocator returns it. glibc keeps freed blocks in its arenas, one for each
thread that ever allocated, up to eight per core (DuckDB's, Arrow's and the publish read-ahead's threads each get
one), and a block freed in one arena serves only what is later allocated from that arena; Arrow's default pool
(mimalloc) keeps freed segments for Arrow's own reuse. The whole run's peak was then about the sum of what each
stage left behind in them rather than the largest stage.

So, once per process, before pandas and Arrow are loaded: glibc uses at most two arenas (the main thread's and one
that every other thread shares), and Arrow allocates from its jemalloc pool, which hands freed pages back to the
system after a short delay. A fixed threshold for mapping large blocks apart (``M_MMAP_THRESHOLD``, returned to the
system when freed) was measured too: it lowered the peak no further and cost about a tenth more CPU (every large
array's pages zeroed anew). Figures: docs/scaling.md.

NumPy asks the kernel for transparent huge pages for every large array (``madvise``). Where the kernel then
compacts memory on the fault to find 2 MB pages, or the pages come from a hypervisor, a fresh array's pages can
arrive far slower than 4 KB pages would: on the 2-core virtual machine of the figures, a new 400-800 MB array was
written at 76-115 MB/s with the advice when its huge pages had to be found (3.7-6.9 GB/s when freed ones were at
hand) and at 1.7 GB/s without it. A nightly run starts on a machine that has been idle, which is the first case:
`bench pipeline --people 100000`, each run after 30 s idle, in the order without, with, with, without: 65.9 and
70.3 s (90-96 CPU s) without the advice against 74.4 and 75.1 s (102 CPU s) with it. Runs started right after
another run (huge pages at hand) went the other way: 66.0 and 67.8 s without against 60.0 and 60.1 s with. So NumPy
gives no such advice in a run.

A variable the user set (``MALLOC_ARENA_MAX``, ``ARROW_DEFAULT_MEMORY_POOL``, ``NUMPY_MADVISE_HUGEPAGE``) is left as
it is.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

#: mallopt's parameter number (glibc's malloc.h).
M_ARENA_MAX = -8
#: Arenas glibc may create: the main thread's and one shared by every other thread.
ARENAS = 2

_done = False


def tune_allocators() -> dict[str, str]:
    """Set the allocators up as the module describes (once per process); what was set, for the record."""
    global _done
    if _done:
        return {}
    _done = True
    applied = {}
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    if glibc and "MALLOC_ARENA_MAX" not in os.environ and ctypes.CDLL(None).mallopt(M_ARENA_MAX, ARENAS):
        applied["malloc_arena_max"] = str(ARENAS)
    if platform.system() == "Linux" and "NUMPY_MADVISE_HUGEPAGE" not in os.environ:
        _no_huge_page_advice()
        applied["numpy_madvise_hugepage"] = "0"
    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ:
        return applied
    if "pyarrow" not in sys.modules:
        # Arrow's C++ code (Parquet, datasets, compute) allocates from the pool this variable names when Arrow is
        # first used; set later, only what Python asks of Arrow would use it.
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "jemalloc"
        applied["arrow_memory_pool"] = "jemalloc"
        return applied
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        applied["arrow_memory_pool"] = "jemalloc (Python's allocations only: Arrow was loaded before)"
    except NotImplementedError:  # a pyarrow built without jemalloc keeps its default pool
        pass
    return applied


def _no_huge_page_advice() -> None:
    """NumPy's huge page advice off: read when NumPy is first imported (and by child processes), or switched off in
    the NumPy already loaded."""
    os.environ["NUMPY_MADVISE_HUGEPAGE"] = "0"
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy._core.multiarray._set_madvise_hugepage(False)
