"""CPU seconds of this process and every process it started (Ray's daemons and workers), by role.

Linux only (reads /proc). A background thread samples the process tree every ``every_s`` seconds and keeps
each process's last cumulative figure, so the CPU of a worker that was killed before the end still counts
(up to its last sample). Roles come from the process name Ray gives a worker (``ray::ModelWorker`` ...).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# process-name prefix (as /proc/PID/stat shows it, at most 15 characters) -> role
ROLES = {
    "ray::ModelWorke": "model actor",
    "ray::DecodeWork": "decode actor",
    "ray::FetchWorke": "fetch actor",
    "ray::ShardLabel": "fused actor",
}


def _read_tree(root: int) -> dict[int, tuple[str, float]]:
    """{pid: (name, CPU seconds incl. reaped children)} of ``root`` and its descendants."""
    procs: dict[int, tuple[int, str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = sum(int(x) for x in fields[11:15]) / _HZ  # utime, stime, cutime, cstime
        procs[int(entry)] = (int(fields[1]), name, cpu)
    tree, frontier = {root}, [root]
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in tree:
                tree.add(child)
                frontier.append(child)
    return {pid: procs[pid][1:] for pid in tree if pid in procs}


def role_of(pid: int, name: str, driver: int) -> str:
    if pid == driver:
        return "driver"
    for prefix, role in ROLES.items():
        if name.startswith(prefix):
            return role
    return "Ray's own processes"


class TreeCPU:
    """``with TreeCPU() as cpu: ...`` then ``cpu.by_role()``: CPU seconds spent inside the block."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s = every_s
        self.driver = os.getpid()
        self._before: dict[int, tuple[str, float]] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self._last.update(_read_tree(self.driver))

    def __enter__(self) -> TreeCPU:
        self._before = _read_tree(self.driver)
        self._last = dict(self._before)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._last.update(_read_tree(self.driver))

    def by_role(self) -> Mapping[str, float]:
        totals: dict[str, float] = {}
        for pid, (name, cpu) in self._last.items():
            spent = cpu - self._before.get(pid, (name, 0.0))[1]
            role = role_of(pid, name, self.driver)
            totals[role] = totals.get(role, 0.0) + max(0.0, spent)
        return totals
