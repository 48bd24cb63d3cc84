"""Idle worker threads are woken by notifications, not only by their poll (gateway.wakeup)."""

from __future__ import annotations

import threading
import time

from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from gateway import wakeup


def test_a_wake_while_no_thread_waits_is_not_lost() -> None:
    waker = wakeup.Waker()
    seen = waker.generation
    waker.wake()  # came while the thread was looking for work
    started = time.monotonic()
    assert waker.wait(seen, 5.0) is True
    assert time.monotonic() - started < 1.0


def test_passing_on_releases_a_waiting_thread_only() -> None:
    waker = wakeup.Waker()
    seen = waker.generation
    waker.pass_on()  # nobody waits: nothing is remembered
    assert waker.generation == seen
    assert waker.wait(seen, 0.05) is False

    woken: list[bool] = []
    thread = threading.Thread(target=lambda: woken.append(waker.wait(waker.generation, 10.0)))
    thread.start()
    deadline = time.monotonic() + 5.0
    while not woken and time.monotonic() < deadline:
        waker.pass_on()
        time.sleep(0.01)
    thread.join(5.0)
    assert woken == [True]


def test_wake_releases_one_thread_and_wake_all_every_one() -> None:
    waker = wakeup.Waker()
    seen = waker.generation
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(waker.wait(seen, 10.0))) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # all three waiting
    waker.wake()
    time.sleep(0.2)
    assert results == [True]
    waker.wake_all()
    for thread in threads:
        thread.join(5.0)
    assert results == [True, True, True]


def test_sqlite_sends_no_notification(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with sessionmaker(engine)() as session, session.begin():
        wakeup.notify_work(session)  # no statement: SQLite has no NOTIFY
    listener = wakeup.Listener(engine, on_notify=lambda: None, on_connect=lambda: None)
    listener.start()  # nothing to listen to
    assert listener.listening is False
    listener.stop()
    engine.dispose()


def test_a_committed_notification_reaches_the_listener(pg_url: str) -> None:
    engine = create_engine(pg_url)
    got = threading.Event()
    connected = threading.Event()
    listener = wakeup.Listener(engine, on_notify=got.set, on_connect=connected.set)
    listener.start()
    try:
        assert connected.wait(10.0)
        assert listener.listening
        with sessionmaker(engine)() as session, session.begin():
            wakeup.notify_work(session)
            assert not got.wait(0.2)  # delivered at the commit, not before
        assert got.wait(10.0)
    finally:
        listener.stop()
        engine.dispose()
    assert listener.listening is False
