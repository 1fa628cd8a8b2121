"""The sandbox's persistent worker: one process for many calls, every limit per call, a fresh worker after one."""

import multiprocessing as mp
import os
import threading
import time

import pytest

from mycelium.core import sandbox
from mycelium.core.sandbox import run_sandboxed
from mycelium.mathlang.expressions import find_expressions, label_expressions
from mycelium.mathlang.safe_math import evaluate


@pytest.fixture(autouse=True)
def _fresh_worker(monkeypatch):
    monkeypatch.setattr(sandbox, "PERSISTENT", True)
    sandbox.shutdown()
    yield
    sandbox.shutdown()


def _spin():
    while True:
        pass


def _burn(cpu_s):
    t0 = time.process_time()
    while time.process_time() - t0 < cpu_s:
        pass
    return os.getpid()


def _alloc_mb(mb):
    return len(bytearray(mb * 2**20))


_kept = []


def _keep_mb(mb):
    _kept.append(bytearray(mb * 2**20))
    return os.getpid()


def _sleep_pow(s, x):
    time.sleep(s)
    return x ** 2


def _worker_pid():
    r = run_sandboxed(os.getpid)
    assert r.ok
    return r.value


def _gone(pid, within_s=5.0):
    """The process has been reaped (or, if an init that does not reap adopted it, is at least dead)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_one_worker_serves_many_calls_and_a_fork_per_call_does_not():
    pids = {run_sandboxed(os.getpid).value for _ in range(20)}
    assert len(pids) == 1 and os.getpid() not in pids
    assert run_sandboxed(os.getppid).value == os.getpid()  # our own child
    assert run_sandboxed(pow, 2, 10).value == 1024
    forked = {run_sandboxed(os.getpid, persistent=False).value for _ in range(5)}
    assert len(forked) == 5 and not forked & pids
    assert _worker_pid() in pids  # the fork path left the worker alone


def test_after_a_timeout_the_worker_is_replaced_and_the_next_call_works():
    old = _worker_pid()
    t0 = time.perf_counter()
    r = run_sandboxed(_spin, timeout_s=0.5)
    assert r == sandbox.Result(False, error="timed out after 0.5 s")
    assert time.perf_counter() - t0 < 4
    assert _gone(old, within_s=0)  # killed and reaped at once, no zombie
    new = _worker_pid()
    assert new != old and run_sandboxed(divmod, 7, 2).value == (3, 1) and _worker_pid() == new


def test_a_memory_hog_is_reported_and_the_next_call_works_in_a_new_worker():
    old = _worker_pid()
    r = run_sandboxed(_alloc_mb, 2048, mem_mb=256)
    assert r == sandbox.Result(False, error="memory limit exceeded")
    assert _gone(old)
    new = _worker_pid()
    assert new != old and run_sandboxed(_alloc_mb, 64, mem_mb=256).value == 64 * 2**20
    assert _worker_pid() == new  # a freed allocation does not retire the worker


def test_each_call_gets_its_own_memory_limit():
    assert run_sandboxed(_alloc_mb, 300, mem_mb=1024).ok
    assert run_sandboxed(_alloc_mb, 300, mem_mb=128).error == "memory limit exceeded"
    assert run_sandboxed(_alloc_mb, 300, mem_mb=1024).ok  # the smaller limit did not stay


def test_a_worker_that_grew_past_its_bound_is_replaced(monkeypatch):
    monkeypatch.setattr(sandbox, "MAX_GROWTH_MB", 32)  # the next worker inherits it
    first = run_sandboxed(_keep_mb, 8).value
    # served, then retired: its heap is now 264 MB larger (far past the bound, whatever free address space the
    # worker inherited from a parent that has run many tests)
    assert run_sandboxed(_keep_mb, 256).value == first
    assert _gone(first, within_s=15.0)
    assert _worker_pid() != first


def test_the_cpu_limit_is_per_call_and_kills_a_call_past_it():
    pids = {run_sandboxed(_burn, 0.7, timeout_s=30, cpu_s=1).value for _ in range(3)}
    assert len(pids) == 1  # 2.1 CPU s in one worker, each call under its own 1 s
    (old,) = pids
    t0 = time.perf_counter()
    r = run_sandboxed(_spin, timeout_s=30, cpu_s=1)
    assert not r.ok and r.error == "child exited with code -24 (killed by a limit)"  # SIGXCPU, not the wall
    assert time.perf_counter() - t0 < 15
    assert _gone(old) and _worker_pid() != old


def _in_a_forked_child(conn, parents_worker):
    own = run_sandboxed(os.getpid).value
    conn.send((own, run_sandboxed(os.getppid).value, own != parents_worker))
    conn.close()


def test_a_forked_child_starts_its_own_worker_and_leaves_the_parents_alone():
    parents = _worker_pid()
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_in_a_forked_child, args=(send, parents))
    child.start()
    send.close()
    assert recv.poll(30)
    childs_worker, its_parent, different = recv.recv()
    child.join(10)
    assert child.exitcode == 0
    assert different and childs_worker != parents and its_parent == child.pid
    assert _gone(childs_worker)  # the child's exit took its worker with it
    assert _worker_pid() == parents  # ours still serves


def test_unpicklable_callables_fall_back_to_a_fork():
    worker = _worker_pid()
    offset = 5
    r = run_sandboxed(lambda x: (x + offset, os.getpid()), 1)
    assert r.ok and r.value[0] == 6 and r.value[1] not in (worker, os.getpid())
    assert _worker_pid() == worker


def test_a_function_the_worker_does_not_know_falls_back_to_a_fork_and_a_fresh_worker_knows_it():
    worker = _worker_pid()

    def late():
        return os.getpid()

    late.__qualname__ = "_late"
    globals()["_late"] = late  # picklable by reference now, unknown to the worker forked before
    try:
        pid = run_sandboxed(late).value
        assert pid not in (worker, os.getpid())
        assert _gone(worker)
        assert run_sandboxed(late).value == _worker_pid() != worker
    finally:
        del globals()["_late"]


def test_threads_share_the_worker_or_fork_and_every_answer_is_theirs():
    out = {}

    def call(i):
        out[i] = [run_sandboxed(_sleep_pow, 0.01, i * 10 + k).value for k in range(5)]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == {i: [(i * 10 + k) ** 2 for k in range(5)] for i in range(6)}


def test_no_fds_or_processes_leak():
    fds = len(os.listdir("/proc/self/fd"))
    worker = _worker_pid()
    with_worker = len(os.listdir("/proc/self/fd"))
    assert with_worker == fds + 4  # its two pipe ends, and multiprocessing's two to watch it
    run_sandboxed(_spin, timeout_s=0.3)
    run_sandboxed(_alloc_mb, 1024, mem_mb=128)
    run_sandboxed(lambda: 1)
    assert [run_sandboxed(pow, 3, 2).value for _ in range(10)] == [9] * 10
    assert len(os.listdir("/proc/self/fd")) == with_worker
    last = _worker_pid()
    sandbox.shutdown()
    assert len(os.listdir("/proc/self/fd")) == fds
    assert _gone(worker, within_s=0) and _gone(last, within_s=0)
    assert not [p for p in mp.active_children() if p.name == "mycelium-sandbox"]


def test_the_persistent_worker_and_a_fork_per_call_give_the_same_results(monkeypatch):
    texts = ["48/2", "2^10", "0.2 x 50", "sqrt(2)", "1/0", "x.y", "factorial(-1)", "9**9**9**9", "binomial(12,10)"]
    cot = r"She sold 48/2 = <<48/2=24>>24. Then 1,200 - 200 = 1,000 and $\frac{8}{2}\cdot 3 = 12$."
    found = find_expressions(cot)
    calls = [(divmod, 7, 2), (divmod, 1, 0), (_alloc_mb, 1024), (_spin,)]

    def results():
        out = [evaluate(texts, timeout_s=1.0), label_expressions(found)]
        for fn, *args in calls:
            r = run_sandboxed(fn, *args, timeout_s=0.5, mem_mb=256)
            out.append((r.ok, r.value, r.error and r.error.splitlines()[0]))
        return out

    persistent = results()
    monkeypatch.setattr(sandbox, "PERSISTENT", False)
    forked = results()
    assert persistent == forked
    assert persistent[0].values[:4] == ["24", "1024", "10", "1.41421356237310"] and persistent[0].values[4:8] == [None] * 4
    assert len(persistent[1]) == len(found) == 3 and all(lab.ok for lab in persistent[1])
    assert persistent[2:] == [(True, (3, 1), None), (False, None, "ZeroDivisionError: integer division or modulo by zero"),
                              (False, None, "memory limit exceeded"), (False, None, "timed out after 0.5 s")]
