"""Run a function in a child process with CPU-time, wall-time and memory limits.

The child returns a :class:`Result` (ok, value, error) instead of raising through
the pipeline. Use it for anything that may hang on hostile input (sympy on
``factorial(10**10)``, math-verify on odd LaTeX).

Two ways to run a call, the same limits and the same results:

* **persistent** (the default): one long-lived worker per process, forked on first use, serves calls sent
  over a pipe, so a call costs a pickle and a pipe round trip, not a fork (forking a process that holds a
  loaded model costs tens of ms). Per call the worker sets ``RLIMIT_CPU`` to its CPU time so far plus
  ``cpu_s`` (whole seconds, rounded up: the call gets at least ``cpu_s``, less than ``cpu_s + 1``) and
  ``RLIMIT_AS`` to its address space now plus ``mem_mb`` (what a fork at call time would get; heap an
  earlier call freed, at most ``MAX_GROWTH_MB``, may also be reused), and lifts both afterwards; the
  parent waits ``timeout_s`` for the answer. A call past its wall time gets its worker killed
  ("timed out after ... s"); a worker killed by a limit reports "child exited with code ... (killed by a
  limit)"; a ``MemoryError`` reports "memory limit exceeded". After any of these, and when the worker's
  address space has grown more than ``MAX_GROWTH_MB`` since it started, the worker is retired and the next
  call forks a fresh one. A fresh one is also forked when this process has imported modules since the
  worker started (so the worker has what a fork at call time would have), and in a forked child process
  (a worker belongs to the pid that started it; the child never touches its parent's). The worker is a
  daemon, stopped and reaped by :func:`shutdown` (also at exit); a retired one is reaped at once.
* **fork per call** (``persistent=False``, or ``MYCELIUM_SANDBOX=fork`` in the environment, or
  ``sandbox.PERSISTENT = False``): a freshly forked child per call. Calls whose function or arguments do not
  pickle (lambdas, closures), calls whose function the worker cannot find, and calls made while another
  thread of this process is using the worker also take this path.

The worker sees this process's state as of the fork that started it; the sandboxed functions are pure
functions of their arguments, so that is the state they need.

>>> run_sandboxed(pow, 2, 10).value
1024
"""

from __future__ import annotations

import atexit
import math
import multiprocessing as mp
import os
import pickle
import resource
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Callable

PERSISTENT = os.environ.get("MYCELIUM_SANDBOX", "persistent") != "fork"
MAX_GROWTH_MB = 256  # a worker whose address space grew more than this since it started is replaced


@dataclass(frozen=True)
class Result:
    ok: bool
    value: Any = None
    error: str | None = None


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}\n{''.join(traceback.format_exception(type(e), e, e.__traceback__, limit=3))}"


# ---------------------------------------------------------------- fork per call


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


def _run_forked(fn, args, timeout_s: float, cpu_s: int, mem_bytes: int) -> Result:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args, cpu_s, mem_bytes), daemon=True)
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


# ---------------------------------------------------------------- the persistent worker: its side


def _set_soft(which: int, soft: int, hard: int) -> None:
    resource.setrlimit(which, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _serve(requests, replies, parent_ends) -> None:
    for conn in parent_ends:  # this process's copies of the parent's ends: EOF must mean the parent is gone
        conn.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and kills the worker
    signal.signal(signal.SIGXCPU, signal.SIG_DFL)  # past its CPU limit the worker dies
    cpu0, as0 = resource.getrlimit(resource.RLIMIT_CPU), resource.getrlimit(resource.RLIMIT_AS)
    base = _address_space_bytes()
    while True:
        try:
            seq, cpu_s, mem_bytes, payload = requests.recv()
        except (EOFError, OSError):
            return
        try:
            fn, args = pickle.loads(payload)
        except Exception:  # noqa: BLE001 - e.g. a function defined after this worker started
            data, retire = None, True
        else:
            data, retire = _limited_call(fn, args, cpu_s, mem_bytes, cpu0, as0)
            fn = args = None
            retire = retire or _address_space_bytes() - base > MAX_GROWTH_MB * 2**20
        try:
            replies.send((seq, data, retire))
        except OSError:  # the parent is gone
            return
        if retire:
            return


def _limited_call(fn, args, cpu_s: int, mem_bytes: int, cpu0, as0) -> tuple[bytes, bool]:
    """(the pickled Result of ``fn(*args)`` under the call's limits, whether it ran out of memory)."""
    try:
        usage = resource.getrusage(resource.RUSAGE_SELF)  # the limits count from what the worker used so far
        _set_soft(resource.RLIMIT_CPU, math.ceil(usage.ru_utime + usage.ru_stime) + cpu_s, cpu0[1])
        if mem_bytes:
            _set_soft(resource.RLIMIT_AS, _address_space_bytes() + mem_bytes, as0[1])
        return pickle.dumps(Result(True, fn(*args)), pickle.HIGHEST_PROTOCOL), False  # pickled under the limits
    except MemoryError:
        error, memory_error = "memory limit exceeded", True
    except BaseException as e:  # noqa: BLE001 - everything is reported, nothing escapes
        error, memory_error = e, False
    finally:
        resource.setrlimit(resource.RLIMIT_AS, as0)
        resource.setrlimit(resource.RLIMIT_CPU, cpu0)
    text = error if isinstance(error, str) else _error_text(error)
    return pickle.dumps(Result(False, error=text)), memory_error


# ---------------------------------------------------------------- the persistent worker: the parent's side


class _Worker:
    def __init__(self):
        ctx = mp.get_context("fork")
        requests, self.requests = ctx.Pipe(duplex=False)
        self.replies, replies = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_serve, args=(requests, replies, (self.requests, self.replies)),
                                daemon=True, name="mycelium-sandbox")
        self.proc.start()
        requests.close()
        replies.close()
        self.owner, self.n_modules, self.seq, self.exitcode = os.getpid(), len(sys.modules), 0, None

    def usable(self) -> bool:
        return self.owner == os.getpid() and self.n_modules == len(sys.modules) and self.proc.is_alive()

    def call(self, payload: bytes, timeout_s: float, cpu_s: int, mem_bytes: int) -> Result | None:
        """The call's Result, or None when the worker could not unpickle it (the caller forks instead)."""
        self.seq += 1
        try:
            self.requests.send((self.seq, cpu_s, mem_bytes, payload))
        except OSError:  # it died between calls (killed from outside): this call forks, the next one starts anew
            self.close(kill=True)
            return None
        if self.replies.poll(timeout_s):
            try:
                seq, data, retire = self.replies.recv()
            except EOFError:  # the worker died: give the kernel a moment to make it a zombie
                self.proc.join(1.0)
            else:
                if seq != self.seq:
                    raise RuntimeError(f"sandbox worker answered request {seq}, expected {self.seq}")
                if retire or data is None:  # retired: it exits by itself; None: a fresh fork may know fn
                    self.close()
                return None if data is None else pickle.loads(data)
        alive = self.proc.is_alive()
        self.close(kill=True)
        if alive:
            return Result(False, error=f"timed out after {timeout_s:g} s")
        return Result(False, error=f"child exited with code {self.exitcode} (killed by a limit)")

    @property
    def closed(self) -> bool:
        return self.replies.closed

    def close(self, kill: bool = False) -> None:
        """Stop the worker (EOF, or SIGKILL when ``kill`` or when it lingers) and reap it."""
        self.requests.close()
        self.replies.close()
        if self.owner == os.getpid() and self.exitcode is None:
            if kill and self.proc.is_alive():
                self.proc.kill()
            self.proc.join(2.0)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
            self.exitcode = self.proc.exitcode
            self.proc.close()  # its sentinel pipes

    def forget(self) -> None:
        """In a forked child: close the inherited copies of the parent's ends, leave the process alone."""
        self.requests.close()
        self.replies.close()


_worker: _Worker | None = None
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _worker, _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    if _worker is not None:
        _worker.forget()
        _worker = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def shutdown() -> None:
    """Stop this process's worker, if any (also at exit); the next persistent call forks a new one."""
    global _worker
    with _lock:
        if _worker is not None:
            _worker.close()
            _worker = None


atexit.register(shutdown)


def _run_persistent(fn, args, timeout_s: float, cpu_s: int, mem_bytes: int) -> Result:
    global _worker
    try:
        payload = pickle.dumps((fn, args), pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - lambdas, closures, unpicklable arguments
        return _run_forked(fn, args, timeout_s, cpu_s, mem_bytes)
    if not _lock.acquire(blocking=False):  # another thread's call is in the worker
        return _run_forked(fn, args, timeout_s, cpu_s, mem_bytes)
    try:
        if _worker is not None and not _worker.usable():
            _worker.close()
            _worker = None
        if _worker is None:
            _worker = _Worker()
        try:
            result = _worker.call(payload, timeout_s, cpu_s, mem_bytes)
        except BaseException:  # Ctrl-C while waiting: the worker's state is unknown
            _worker.close(kill=True)
            _worker = None
            raise
        if _worker.closed:
            _worker = None
    finally:
        _lock.release()
    return result if result is not None else _run_forked(fn, args, timeout_s, cpu_s, mem_bytes)


# ---------------------------------------------------------------- the API


def run_sandboxed(
    fn: Callable[..., Any], *args: Any, timeout_s: float = 5.0, mem_mb: int = 1024, cpu_s: int | None = None,
    persistent: bool | None = None,
) -> Result:
    """Call ``fn(*args)`` in a child process; kill it past ``timeout_s`` wall seconds.

    ``mem_mb`` bounds the memory the call may allocate beyond what the child holds when it starts;
    ``cpu_s`` (default: ``timeout_s`` rounded up) bounds its CPU seconds. ``persistent`` (default
    ``PERSISTENT``) chooses the long-lived worker over a fork per call.
    """
    cpu = max(1, int(cpu_s if cpu_s is not None else timeout_s + 0.999))
    run = _run_persistent if (PERSISTENT if persistent is None else persistent) else _run_forked
    return run(fn, args, timeout_s, cpu, mem_mb * 2**20)


def map_sandboxed(fn_many: Callable[[list], list], items: list, on_error: Callable[[str], Any], *,
                  timeout_s: float = 2.0, batch_timeout_s: float | None = None, mem_mb: int = 512,
                  persistent: bool | None = None) -> list:
    """``fn_many(items)`` in one call; if that call hits a limit, one call per item to find which.

    ``fn_many`` maps a list to a list of the same length; an item whose own call fails becomes
    ``on_error(first line of the error)``. Costs one call in the common case, and a hostile item
    at most its own ``timeout_s``.
    """
    if not items:
        return []
    batch = run_sandboxed(fn_many, list(items), timeout_s=batch_timeout_s or timeout_s, mem_mb=mem_mb,
                          persistent=persistent)
    if batch.ok:
        return batch.value
    out = []
    for item in items:
        r = run_sandboxed(fn_many, [item], timeout_s=timeout_s, mem_mb=mem_mb, persistent=persistent)
        out.append(r.value[0] if r.ok else on_error(f"sandbox: {r.error.splitlines()[0]}"))
    return out
