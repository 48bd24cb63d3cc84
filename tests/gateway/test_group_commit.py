"""The intake committer: jobs waiting together share one transaction; one job's failure is its own."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import Forbidden
from gateway.security.clients import create_tenant
from gateway.services.group_commit import GroupCommitter
from gateway.storage.models import Tenant


def _codes(session_factory: sessionmaker[Session]) -> set[str]:
    with session_factory() as session:
        return set(session.scalars(select(Tenant.code)))


def test_waiting_jobs_share_one_commit_and_a_refused_one_fails_alone(
    session_factory: sessionmaker[Session],
) -> None:
    committer = GroupCommitter(session_factory)
    release, running = threading.Event(), threading.Event()

    def blocker(session: Session) -> str:
        running.set()
        release.wait(10)
        return create_tenant(session, code="first", name="First").code

    def tenant(code: str):  # type: ignore[no-untyped-def]
        return lambda session: create_tenant(session, code=code, name=code).code

    def refused(session: Session) -> str:
        raise Forbidden("not yours")

    try:
        first = committer.submit(blocker)
        assert running.wait(10)  # its batch is taken: what follows queues behind it
        queued = [committer.submit(tenant("a")), committer.submit(refused), committer.submit(tenant("b"))]
        release.set()
        assert first.result(10) == "first"
        assert queued[0].result(10) == "a" and queued[2].result(10) == "b"
        with pytest.raises(Forbidden):
            queued[1].result(10)
        assert committer.batches == 2, "the three jobs queued behind the first are one transaction"
        assert _codes(session_factory) == {"first", "a", "b"}
    finally:
        committer.close()


def test_an_unexpected_error_splits_the_batch_so_the_others_still_commit(
    session_factory: sessionmaker[Session],
) -> None:
    committer = GroupCommitter(session_factory)
    release, running = threading.Event(), threading.Event()

    def blocker(session: Session) -> str:
        running.set()
        release.wait(10)
        return "ok"

    def broken(session: Session) -> str:
        create_tenant(session, code="broken", name="written, then the job fails")
        session.flush()
        raise RuntimeError("a bug in this job")

    try:
        first = committer.submit(blocker)
        assert running.wait(10)  # its batch is taken: what follows queues behind it
        jobs = [
            committer.submit(lambda s: create_tenant(s, code="c1", name="c1").code),
            committer.submit(broken),
            committer.submit(lambda s: create_tenant(s, code="c2", name="c2").code),
        ]
        release.set()
        assert first.result(10) == "ok"
        assert jobs[0].result(10) == "c1" and jobs[2].result(10) == "c2"
        with pytest.raises(RuntimeError, match="a bug"):
            jobs[1].result(10)
        assert _codes(session_factory) == {"c1", "c2"}, "the failed job's write is rolled back, the others kept"
    finally:
        committer.close()
    with pytest.raises(RuntimeError, match="closed"):
        committer.submit(lambda s: None)


def test_items_awaited_on_an_event_loop_share_a_commit_and_a_cancelled_one_does_not_stop_the_others(
    session_factory: sessionmaker[Session],
) -> None:
    committer = GroupCommitter(session_factory)
    release, running = threading.Event(), threading.Event()
    written: list[list[str]] = []

    def blocker(session: Session) -> str:
        running.set()
        release.wait(10)
        return "ok"

    def write(session: Session, codes: list[str]) -> list[str | Forbidden]:
        written.append(list(codes))
        return [
            Forbidden("not yours") if code == "refused" else create_tenant(session, code=code, name=code).code
            for code in codes
        ]

    async def scenario() -> tuple[list[object], bool]:
        first = committer.submit(blocker)
        assert await asyncio.to_thread(running.wait, 10)  # its batch is taken: what follows queues behind it
        tasks = [asyncio.ensure_future(committer.run_item(write, code)) for code in ("e1", "gone", "refused", "e2")]
        await asyncio.sleep(0.05)  # every item is queued
        tasks[1].cancel()  # its client went away: it is still written, nobody awaits the answer
        release.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        return outcomes, await asyncio.wrap_future(first) == "ok"

    try:
        outcomes, first_ok = asyncio.run(scenario())
        assert first_ok
        assert outcomes[0] == "e1" and outcomes[3] == "e2"
        assert isinstance(outcomes[1], asyncio.CancelledError)
        assert isinstance(outcomes[2], Forbidden)
        assert written == [["e1", "gone", "refused", "e2"]], "the four items are one call in one transaction"
        assert committer.batches == 2
        assert _codes(session_factory) == {"e1", "gone", "e2"}
    finally:
        committer.close()
