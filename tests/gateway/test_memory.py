"""gateway.memory: the worker processes cap malloc arenas and trim freed pages (glibc)."""

from __future__ import annotations

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
