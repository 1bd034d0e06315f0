"""The allocators' set-up of a run's process (ci_pipeline.memory), each case in a fresh interpreter."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

from ci_pipeline_tests.conftest import SAMPLE_DIR

PROBE = """
import json
from ci_pipeline.memory import tune_allocators
first = tune_allocators()
import pyarrow as pa
import numpy
# Setting the advice returns what it was.
huge_pages = numpy._core.multiarray._set_madvise_hugepage(False)
print(json.dumps({"applied": first, "again": tune_allocators(), "pool": pa.default_memory_pool().backend_name,
                  "huge_pages": huge_pages}))
"""


def probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    clean.pop("ARROW_DEFAULT_MEMORY_POOL", None)
    clean.pop("NUMPY_MADVISE_HUGEPAGE", None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=clean | env, capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout)


def test_a_run_uses_two_arenas_and_arrows_jemalloc_pool_set_up_once():
    found = probe()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert found["applied"]["malloc_arena_max"] == "2"
    assert found["applied"]["arrow_memory_pool"] == "jemalloc"
    assert found["pool"] == "jemalloc"
    assert found["again"] == {}
    if platform.system() == "Linux":
        assert found["applied"]["numpy_madvise_hugepage"] == "0"
        assert found["huge_pages"] is False


def test_what_the_user_set_in_the_environment_is_left_as_it_is():
    found = probe(MALLOC_ARENA_MAX="4", ARROW_DEFAULT_MEMORY_POOL="system", NUMPY_MADVISE_HUGEPAGE="1")
    assert found["applied"] == {}
    assert found["pool"] == "system"
    assert found["huge_pages"] is True


def test_numpy_loaded_before_gives_no_huge_page_advice_either():
    code = (
        "import numpy, json; from ci_pipeline.memory import tune_allocators; applied = tune_allocators(); "
        "print(json.dumps([applied.get('numpy_madvise_hugepage'), numpy._core.multiarray._set_madvise_hugepage(0)]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    if platform.system() == "Linux":
        assert json.loads(done.stdout) == ["0", False]


def test_the_command_sets_the_allocators_up_before_it_runs_a_sub_command():
    code = (
        "from ci_pipeline.cli import main; "
        f"status = main(['--config', {str(SAMPLE_DIR / 'ci_pipeline.yaml')!r}, 'validate']); "
        "import pyarrow as pa; print(status, pa.default_memory_pool().backend_name)"
    )
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.stdout.split()[-2:] == ["0", "jemalloc"], done.stderr[-2000:]


def test_with_arrow_loaded_before_python_s_own_arrow_allocations_use_jemalloc():
    code = "import pyarrow, json; from ci_pipeline.memory import tune_allocators; print(json.dumps(tune_allocators()))"
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["arrow_memory_pool"].startswith("jemalloc (Python's allocations only")
