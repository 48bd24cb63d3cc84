"""gateway.memory: the worker processes cap malloc arenas and trim freed pages (glibc)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from gateway.memory import _libc


@pytest.mark.skipif(_libc() is None, reason="not glibc: nothing is done there")
def test_bound_native_memory_starts_one_trim_thread_per_process() -> None:
    code = textwrap.dedent(
        """
        import threading
        from gateway.memory import bound_native_memory
        assert bound_native_memory(interval=0.01) is True
        assert bound_native_memory(interval=0.01) is True
        names = [t.name for t in threading.enumerate()]
        assert names.count("malloc-trim") == 1, names
        blobs = [bytearray(1 << 20) for _ in range(50)]
        del blobs
        import time; time.sleep(0.05)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


_MAPPED_BLOCKS = """
import ctypes, ctypes.util
from gateway.memory import bound_native_memory

class MallInfo(ctypes.Structure):  # glibc's struct mallinfo (int fields; small values here)
    _fields_ = [(name, ctypes.c_int) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo.restype = MallInfo
assert bound_native_memory(interval=60) is True
# glibc's default: freeing a mapped 8 MiB block raises the mmap threshold to 8 MiB
libc.free(libc.malloc(8 << 20))
before = libc.mallinfo().hblks
block = libc.malloc(1 << 20)
print("mapped" if libc.mallinfo().hblks == before + 1 else "in-arena")
libc.free(block)
"""


@pytest.mark.skipif(_libc() is None, reason="not glibc: nothing is done there")
def test_large_blocks_stay_mapped_after_a_larger_one_was_freed() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _MAPPED_BLOCKS], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "mapped"  # given back at free(), not kept in an arena until a trim


@pytest.mark.skipif(_libc() is None, reason="not glibc: nothing is done there")
def test_the_operators_mmap_threshold_is_kept() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["MALLOC_MMAP_THRESHOLD_"] = str(4 << 20)
    out = subprocess.run([sys.executable, "-c", _MAPPED_BLOCKS], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "in-arena"
