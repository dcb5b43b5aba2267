"""This machine as ``auto`` sees it: its physical cores, the thread counts and the
precisions worth timing."""

from __future__ import annotations

import contextlib
import os

import torch

from .perf import cpuinfo_text


def physical_cores() -> int | None:
    """Physical cores this process may use (distinct core ids of its allowed CPUs), or
    None where ``/proc/cpuinfo`` does not say."""
    text = cpuinfo_text()
    if text is None:
        return None
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    cores, cpu, phys = set(), None, "0"
    for line in [*text.splitlines(), ""]:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            cpu = int(value)
        elif key == "physical id":
            phys = value
        elif key == "core id" and (allowed is None or cpu in allowed):
            cores.add((phys, value))
    return len(cores) or None


def thread_options() -> list[int]:
    """The thread counts worth timing: the logical cores and the physical ones."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    logical = logical or os.cpu_count() or torch.get_num_threads()
    return sorted({logical, physical_cores() or logical})


def cpu_precisions() -> list[str]:
    """The precisions this CPU can run: fp32 and int8 always, bf16 where torch has it."""
    out = ["fp32"]
    with contextlib.suppress(RuntimeError):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.ones(2, 2) @ torch.ones(2, 2)
        out.append("bf16")
    return [*out, "int8"]


__all__ = ["cpu_precisions", "physical_cores", "thread_options"]
