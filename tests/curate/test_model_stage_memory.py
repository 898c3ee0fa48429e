"""keep_freed_memory: after it, big blocks freed and allocated again are not page-faulted in again."""

import json
import subprocess
import sys

import pytest

BLOCK = 64 * 2**20  # above glibc's largest mmap threshold (32 MB), like a CPU forward's activations
ALLOCS = 10

SCRIPT = f"""
import ctypes, ctypes.util, json, resource, sys
from videonet_curate.model_stage import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({ALLOCS}):
    block = libc.malloc({BLOCK})
    ctypes.memset(block, 1, {BLOCK})  # touch every page
    libc.free(block)
print(json.dumps({{"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}}))
"""


def _faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_blocks_are_reused_not_faulted_in_again():
    pages = BLOCK // 4096
    default, kept = _faults("default"), _faults("keep")
    assert default["faults"] > (ALLOCS - 1) * pages / 2  # glibc unmaps each block: every page faults again
    assert kept["kept"] is True
    assert kept["faults"] < 2 * pages  # the first block's pages only; the next ones reuse them
