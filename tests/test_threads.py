"""SyncRunner: sync predictions run in worker threads, overlap, and keep their context."""

import asyncio
import contextlib
import contextvars
import random
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from lambdaml.serve.threads import Interrupted, SyncRunner

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def test_runs_off_the_event_loop_and_returns_the_result():
    async def main():
        runner = SyncRunner("t")
        loop_thread = threading.get_ident()
        return loop_thread, await runner.run(lambda x: (threading.get_ident(), x * 2), {"x": 21})

    loop_thread, (worker_thread, result) = asyncio.run(main())
    assert result == 42 and worker_thread != loop_thread


def test_exceptions_reach_the_caller():
    def fail() -> None:
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        asyncio.run(SyncRunner("t").run(fail, {}))


def test_calls_overlap_and_see_their_callers_context():
    barrier = threading.Barrier(3, timeout=10)  # passes only if three calls are in flight at once

    def work() -> str:
        barrier.wait()
        return request_id.get()

    async def one(runner: SyncRunner, name: str) -> str:
        request_id.set(name)
        return await runner.run(work, {})

    async def main():
        runner = SyncRunner("t")
        return await asyncio.gather(*(one(runner, name) for name in ("a", "b", "c")))

    assert asyncio.run(main()) == ["a", "b", "c"]


def test_a_timed_out_call_does_not_hold_up_the_next():
    release = threading.Event()

    async def main():
        runner = SyncRunner("t")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(runner.run(release.wait, {"timeout": 10}), 0.05)
        try:
            return await asyncio.wait_for(runner.run(lambda: "next", {}), 10)
        finally:
            release.set()

    assert asyncio.run(main()) == "next"


# Cancelable jobs: runner.start(...) -> Job; Job.cancel() raises Interrupted in the job's thread.


def _spin(started: threading.Event) -> None:  # pure Python: interruptible between any two bytecodes
    started.set()
    while True:
        pass


@contextlib.contextmanager
def _switch_interval(seconds: float) -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _worker_deaths(monkeypatch) -> list:
    deaths: list = []
    monkeypatch.setattr(threading, "excepthook", deaths.append)  # a worker killed by a stray Interrupted lands here
    return deaths


def test_a_busy_python_loop_is_interrupted_and_its_thread_runs_the_next_job(monkeypatch):
    deaths = _worker_deaths(monkeypatch)
    started = threading.Event()

    async def main():
        runner = SyncRunner("t")
        job = runner.start(_spin, {"started": started})
        assert await asyncio.to_thread(started.wait, 10) and job.running and not job.finished
        job.cancel()
        with pytest.raises(Interrupted):  # a loop that ignored the interrupt would time out instead
            await asyncio.wait_for(job.wait(), 10)
        assert job.finished and not job.running
        job.cancel()  # finished: nothing happens
        next_job = runner.start(threading.get_ident, {})
        return runner._threads, await next_job.wait(), next_job.finished

    threads, _, finished = asyncio.run(main())
    assert threads == 1 and finished and not deaths


def test_a_job_cancelled_before_its_thread_picks_it_up_never_runs():
    ran = []

    def record() -> None:
        ran.append(1)

    async def main():
        runner = SyncRunner("t")
        await runner.run(lambda: None, {})  # an idle thread is waiting on the queue
        for _ in range(20):
            job = runner.start(record, {})
            job.cancel()
            assert job.finished and not job.running
            with pytest.raises(Interrupted, match="before it started"):
                await job.wait()
        return await runner.run(lambda: "next", {})  # the queue is drained: each job was picked up (and skipped)

    with _switch_interval(100):  # the loop thread keeps the GIL until it blocks: no worker starts a job between the calls
        assert asyncio.run(main()) == "next"
    assert ran == []


def test_jobs_cancelled_together_all_stop(monkeypatch):
    deaths = _worker_deaths(monkeypatch)

    async def main():
        runner = SyncRunner("t")
        started = [threading.Event() for _ in range(3)]
        jobs = [runner.start(_spin, {"started": event}) for event in started]
        assert all([await asyncio.to_thread(event.wait, 10) for event in started])
        for job in jobs:
            job.cancel()
        outcomes = await asyncio.wait_for(asyncio.gather(*(job.wait() for job in jobs), return_exceptions=True), 1)
        return outcomes, await asyncio.wait_for(asyncio.gather(*(runner.start(lambda: 1, {}).wait() for _ in jobs)), 5)

    outcomes, after = asyncio.run(main())
    assert all(isinstance(outcome, Interrupted) for outcome in outcomes) and after == [1, 1, 1] and not deaths


def test_a_function_sleeping_in_c_is_interrupted_when_the_sleep_returns():
    def sleep() -> None:
        time.sleep(1.5)

    async def main():
        runner = SyncRunner("t")
        begin = time.monotonic()
        job = runner.start(sleep, {})
        while not job.running:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.1)  # now surely inside time.sleep
        job.cancel()
        await asyncio.wait({job.done_future}, timeout=1)
        assert not job.done_future.done() and job.running
        with pytest.raises(Interrupted):
            await job.wait()
        return time.monotonic() - begin

    assert 1.5 <= asyncio.run(main()) < 3


def test_cancelling_the_awaiting_task_does_not_resolve_the_job_early():
    release = threading.Event()

    async def main():
        runner = SyncRunner("t")
        job = runner.start(release.wait, {"timeout": 10})
        waiter = asyncio.create_task(job.wait())
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await asyncio.sleep(0.05)
        assert not job.done_future.done() and job.running
        release.set()
        return await asyncio.wait_for(job.wait(), 10), job.finished

    assert asyncio.run(main()) == (True, True)


def test_jobs_run_in_their_callers_context():
    async def one(runner: SyncRunner, name: str) -> str:
        request_id.set(name)
        return await runner.start(request_id.get, {}).wait()

    async def main():
        runner = SyncRunner("t")
        return await asyncio.gather(*(one(runner, name) for name in ("a", "b", "c")))

    assert asyncio.run(main()) == ["a", "b", "c"]


def test_an_interrupt_racing_the_end_of_a_job_never_leaks_into_the_worker(monkeypatch):
    deaths = _worker_deaths(monkeypatch)
    rng = random.Random(1234)

    def short(n: int) -> int:
        total = 0
        for i in range(n):
            total += i
        return total

    async def one(runner: SyncRunner) -> str:
        job = runner.start(short, {"n": rng.randrange(0, 300)})
        for _ in range(rng.randrange(0, 4)):
            await asyncio.sleep(0)
        if rng.random() < 0.5:
            time.sleep(rng.random() * 0.0005)  # holds the loop (and gives the GIL away) for up to 0.5 ms
        job.cancel()
        try:
            await job.wait()
            return "finished"
        except Interrupted:
            return "interrupted"

    async def main():
        runner = SyncRunner("t")
        outcomes = []
        for _ in range(50):
            outcomes += await asyncio.gather(*(one(runner) for _ in range(4)))
        threads = runner._threads
        barrier = threading.Barrier(threads, timeout=10)  # one job on every thread at once

        def check() -> tuple[int, int]:
            barrier.wait()
            return threading.get_ident(), short(100_000)  # a stray pending Interrupted would fire in this loop

        results = await asyncio.wait_for(asyncio.gather(*(runner.start(check, {}).wait() for _ in range(threads))), 10)
        return outcomes, threads, results

    with _switch_interval(1e-6):  # the GIL changes hands all the time, so cancel() lands anywhere in the worker
        outcomes, threads, results = asyncio.run(main())
    assert len(outcomes) == 200 and {"finished", "interrupted"} <= set(outcomes), outcomes
    assert len({ident for ident, _ in results}) == threads and {total for _, total in results} == {short(100_000)}
    assert not deaths


def test_an_interrupt_arriving_anywhere_in_the_workers_own_code_leaves_the_thread_clean(monkeypatch):
    # The random races above rarely land between the function's return and the end of the job. Here a profile hook in
    # the worker thread has another thread cancel the job at the hook's n-th event after the function's last line,
    # for every n up to past the point where the thread waits on the queue again. (Under this hook, clearing a
    # pending exception with PyThreadState_SetAsyncExc(ident, NULL) would hang the next job: see threads.)
    deaths = _worker_deaths(monkeypatch)

    def function(box: list, ready: threading.Event, n: int) -> str:
        events = 0

        def hook(frame, event, arg) -> None:
            nonlocal events
            events += 1
            if events == n:
                sys.setprofile(None)
                canceller = threading.Thread(target=box[0].cancel)
                canceller.start()
                canceller.join(0.05)  # times out where this thread holds the job's lock: cancel() waits for it

        ready.wait()
        sys.setprofile(hook)
        return "done"

    async def main():
        runner = SyncRunner("t")
        outcomes = []
        for n in range(1, 40):
            box, ready = [], threading.Event()
            box.append(runner.start(function, {"box": box, "ready": ready, "n": n}))
            ready.set()
            try:
                outcomes.append(await asyncio.wait_for(box[0].wait(), 5))
            except Interrupted:
                outcomes.append("interrupted")
            assert box[0].finished
        return outcomes, await asyncio.wait_for(runner.run(lambda: "next", {}), 5), runner._threads

    outcomes, last, threads = asyncio.run(main())
    assert "interrupted" in outcomes and "done" in outcomes and last == "next" and threads == 1 and not deaths
