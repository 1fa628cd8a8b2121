"""Run a function in a child process with CPU-time, wall-time and memory limits.

The child returns a :class:`Result` (ok, value, error) instead of raising through
the pipeline. Use it for anything that may hang on hostile input (sympy on
``factorial(10**10)``, math-verify on odd LaTeX).

>>> run_sandboxed(pow, 2, 10).value
1024
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import traceback
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Result:
    ok: bool
    value: Any = None
    error: str | None = None


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def _child(conn, fn, args, cpu_s: int, mem_bytes: int):
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        if mem_bytes:
            # A forked child starts with the parent's address space (a loaded model is GBs of it):
            # the limit bounds what the child may add on top.
            limit = _address_space_bytes() + mem_bytes
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        conn.send(Result(True, fn(*args)))
    except MemoryError:
        conn.send(Result(False, error="memory limit exceeded"))
    except BaseException as e:  # noqa: BLE001 - everything is reported, nothing escapes
        conn.send(Result(False, error=f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"))
    finally:
        conn.close()


def run_sandboxed(
    fn: Callable[..., Any], *args: Any, timeout_s: float = 5.0, mem_mb: int = 1024
) -> Result:
    """Call ``fn(*args)`` in a forked child; kill it past ``timeout_s`` wall seconds.

    ``mem_mb`` bounds the memory the child may allocate beyond what it inherits.
    """
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child, args=(child, fn, args, max(1, int(timeout_s + 0.999)), mem_mb * 2**20), daemon=True
    )
    proc.start()
    child.close()
    try:
        if parent.poll(timeout_s):
            try:
                return parent.recv()
            except EOFError:
                pass
        if proc.is_alive():
            return Result(False, error=f"timed out after {timeout_s:g} s")
        return Result(False, error=f"child exited with code {proc.exitcode} (killed by a limit)")
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        parent.close()


def map_sandboxed(fn_many: Callable[[list], list], items: list, on_error: Callable[[str], Any], *,
                  timeout_s: float = 2.0, batch_timeout_s: float | None = None, mem_mb: int = 512) -> list:
    """``fn_many(items)`` in one child; if that child hits a limit, one child per item to find which.

    ``fn_many`` maps a list to a list of the same length; an item whose own child fails becomes
    ``on_error(first line of the error)``. Costs one fork in the common case, and a hostile item
    at most its own ``timeout_s``.
    """
    if not items:
        return []
    batch = run_sandboxed(fn_many, list(items), timeout_s=batch_timeout_s or timeout_s, mem_mb=mem_mb)
    if batch.ok:
        return batch.value
    out = []
    for item in items:
        r = run_sandboxed(fn_many, [item], timeout_s=timeout_s, mem_mb=mem_mb)
        out.append(r.value[0] if r.ok else on_error(f"sandbox: {r.error.splitlines()[0]}"))
    return out
