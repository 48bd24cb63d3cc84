"""Benchmark: a year of indicators for an ESSMS of 100 places from ~40,000 stay events.

Usage: python bench/bench_indicators.py [--seed 7] [--repeat 5] [--db]

The ESSMS: 80 permanent, 5 temporary and 15 day-care places. Permanent residents go out at
afternoons or nights and are hospitalised now and then, get GIR assessments and change units; temporary
stays last two to six weeks; day care is one admission and one exit per day attended, on the
days it opens (weekdays that are not public holidays: its ``opening_days``), never more people
than places on a day; 5 % of events are re-sent as corrections (version 2). No place is ever
overbooked, so no occupancy rate can exceed 100 % (tests/bench/test_bench_indicators.py).
Times the whole computation from raw events: latest versions, timeline, the year, its 4
quarters and 12 months, and the daily occupancy series. Prints figures; no assertion.

``--db`` also stores the events encrypted in a migrated SQLite file (as the gateway stores them,
in bulk, without one audit event per insert) and times what the console's Indicateurs page
computes: ``gateway.services.stays.overview`` (load and decrypt every event version, one
audited read, the timeline, the period's dataset and the year's occupancy per type by month).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reporting import Capacity, Period, Rules, StayEvent, compute  # noqa: E402
from reporting.indicators import compute_timeline, occupancy_series  # noqa: E402

FINESS = "750000010"  # a valid FINESS (Luhn key): the --db mode registers the ESSMS
PARIS = ZoneInfo("Europe/Paris")
# French public holidays of 2025 on weekdays (Code du travail L3133-1; 1 November is a Saturday)
HOLIDAYS_2025 = frozenset(
    date(2025, m, d)
    for m, d in ((1, 1), (4, 21), (5, 1), (5, 8), (5, 29), (6, 9), (7, 14), (8, 15), (11, 11), (12, 25))
)
DAY_CARE_DAYS = [
    date(2025, 1, 1) + timedelta(days=i)
    for i in range(365)
    if (date(2025, 1, 1) + timedelta(days=i)).weekday() < 5
    and date(2025, 1, 1) + timedelta(days=i) not in HOLIDAYS_2025
]
DAY_CARE_PLACES = 15
CAPS = [
    Capacity("permanent", 80),
    Capacity("temporary", 5),
    Capacity("day_care", DAY_CARE_PLACES, opening_days=len(DAY_CARE_DAYS)),  # 251 days open in 2025
]


def synthetic_year(seed: int = 7) -> list[StayEvent]:
    rnd = random.Random(seed)
    events: list[StayEvent] = []
    n = 0

    def add(kind: str, person: str, day: date, hour: int, **kw: object) -> None:
        nonlocal n
        n += 1
        at = datetime(day.year, day.month, day.day, hour, rnd.randrange(60), tzinfo=PARIS)
        events.append(StayEvent(f"e{n}", kind, person, FINESS, at, **kw))  # type: ignore[arg-type]

    start = date(2025, 1, 1)
    # permanent: 80 beds, a resident leaves (death) now and then and the bed is taken again
    outing_every = 1  # days between outings (plus 0-2): sets the volume near 40,000 events
    for bed in range(80):
        day, k = start - timedelta(days=rnd.randrange(1, 2000)), 0
        while day < date(2026, 1, 1):
            person = f"perm-{bed}-{k}"
            add("admission", person, day, 10, accommodation="permanent", sex=rnd.choice("FM"),
                birth_date=date(rnd.randrange(1925, 1950), 1 + rnd.randrange(12), 1 + rnd.randrange(28)),
                gir=rnd.randrange(1, 7), unit="A")  # fmt: skip
            length = rnd.randrange(200, 1500)
            end = day + timedelta(days=length)
            d = max(day + timedelta(days=1), start)
            while d < min(end, date(2026, 1, 1)) - timedelta(days=8):
                if rnd.random() < 0.02:
                    add("absence_start", person, d, 9, absence_kind="hospitalisation")
                    d += timedelta(days=rnd.randrange(1, 15))
                    add("absence_end", person, d, 17)
                elif rnd.random() < 0.01:
                    add("transfer", person, d, 11, unit=rnd.choice("ABC"))
                elif rnd.random() < 0.005:
                    add("assessment", person, d, 12, gir=rnd.randrange(1, 7))
                else:
                    # an afternoon out (back the same day: no night away) or a night with family
                    overnight = rnd.random() < 0.3
                    add("absence_start", person, d, 14, absence_kind="holiday")
                    add("absence_end", person, d + timedelta(days=int(overnight)), 18)
                    d += timedelta(days=int(overnight))
                d += timedelta(days=outing_every + rnd.randrange(2))
            if end < date(2026, 1, 1):
                add("exit", person, end, 8, exit_reason="death")
            day, k = end + timedelta(days=rnd.randrange(1, 10)), k + 1
    # temporary: 5 places, stays of 2-6 weeks
    for place in range(5):
        day, k = start, 0
        while day < date(2026, 1, 1):
            person = f"temp-{place}-{k}"
            add("admission", person, day, 10, accommodation="temporary", sex=rnd.choice("FM"))
            day += timedelta(days=rnd.randrange(14, 42))
            add("exit", person, day, 10, exit_reason=rnd.choice(("home", "other_essms")))
            day, k = day + timedelta(days=rnd.randrange(1, 5)), k + 1
    # day care: 15 places, 22 enrolled people who each wish to come 3 days in 4, one admission +
    # exit per day attended, on the days it opens; when more wish to come than there are places,
    # the first 15 (drawn at random) come. (Until 2026-12 every wish was honoured on every
    # weekday: 16.5 people a day on average for 15 places, 261 days for 250 opening days, hence
    # a day-care occupancy of 115 % and the total of 100.75 %: the generator overbooked, the
    # computation was right.)
    for day in DAY_CARE_DAYS:
        wishing = [i for i in range(22) if rnd.random() < 0.75]
        for i in sorted(rnd.sample(wishing, min(len(wishing), DAY_CARE_PLACES))):
            person = f"day-{i}"
            add("admission", person, day, 9, accommodation="day_care", sex="F")
            add("exit", person, day, 17, exit_reason="home")
    # corrections: 5 % re-sent with version 2 (an hour later)
    for ev in rnd.sample(events, len(events) // 20):
        events.append(replace(ev, version=2, at=ev.at + timedelta(minutes=30)))
    rnd.shuffle(events)
    return events


def year_only(events: list[StayEvent]) -> tuple[float, float]:
    """(wall, CPU) seconds for the year's dataset from raw events."""
    t0, c0 = time.perf_counter(), time.process_time()
    compute(events, finess=FINESS, period=Period.parse("2025"), capacities=CAPS)
    return time.perf_counter() - t0, time.process_time() - c0


def run_once(events: list[StayEvent]) -> tuple[float, float]:
    """(wall, CPU) seconds for the year, its quarters and months and the daily series."""
    t0, c0 = time.perf_counter(), time.process_time()
    rules = Rules(billing_stop_days={"hospitalisation": 21})
    tl = compute_timeline(events, rules)
    year = Period.parse("2025")
    for p in [year, *(Period.parse(f"2025-Q{q}") for q in range(1, 5)), *year.months()]:
        compute(events, finess=FINESS, period=p, capacities=CAPS, rules=rules, timeline=tl)
    occupancy_series(tl, finess=FINESS, start=year.start, end=year.end, capacities=CAPS)
    return time.perf_counter() - t0, time.process_time() - c0


def console_page(events: list[StayEvent], repeat: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of the console's page computation from a SQLite database."""
    import json
    import tempfile
    import uuid

    from gateway.security.clients import add_essms, create_tenant
    from gateway.security.crypto import KeyRing, encrypt, generate_master_key
    from gateway.services import stays
    from gateway.storage.db import make_engine, make_sessionmaker, session_scope
    from gateway.storage.migrate import upgrade
    from gateway.storage.models import StayEventRow
    from reporting.events import to_json

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/bench.db"
        upgrade(url)
        factory = make_sessionmaker(make_engine(url))
        keyring = KeyRing.parse(f"bench:{generate_master_key()}")
        with session_scope(factory) as session:
            tenant = create_tenant(session, code="bench", name="Bench")
            add_essms(session, tenant_id=tenant.id, finess=FINESS, name="EHPAD bench", category="500")
            stays.put_config(session, tenant_id=tenant.id, finess=FINESS, capacities=CAPS, rules={}, actor="bench")
            tenant_id = tenant.id
            for e in events:
                row_id = str(uuid.uuid4())
                plain = json.dumps(to_json(e), separators=(",", ":")).encode()
                ct, key_id = encrypt(
                    session, tenant_id=tenant_id, plaintext=plain, keyring=keyring, aad=row_id.encode()
                )
                session.add(StayEventRow(id=row_id, tenant_id=tenant_id, essms_finess=FINESS, event_id=e.event_id,
                                         version=e.version, kind=e.kind, person_ref=e.person_ref, occurred_at=e.at,
                                         source="bench", request_hash="0" * 64, payload_ct=ct, data_key_id=key_id,
                                         created_at=e.at))  # fmt: skip
        out = []
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            with session_scope(factory) as session:
                stays.overview(session, tenant_id=tenant_id, finess=FINESS, period=Period.parse("2025"), by="month",
                               keyring=keyring, actor="bench")  # fmt: skip
            out.append((time.perf_counter() - t0, time.process_time() - c0))
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", action="store_true", help="also time the console page's computation from SQLite")
    args = parser.parse_args()
    events = synthetic_year(args.seed)
    kinds: dict[str, int] = {}
    for e in events:
        kinds[e.kind] = kinds.get(e.kind, 0) + 1
    print(f"{len(events)} events: {dict(sorted(kinds.items()))}")
    year = [year_only(events) for _ in range(args.repeat)]
    full = [run_once(events) for _ in range(args.repeat)]
    ds = compute(events, finess=FINESS, period=Period.parse("2025"), capacities=CAPS)
    t = ds.totals
    print(
        f"year 2025: people={t.people_accompanied} days={t.days_realised} occupancy={t.occupancy_rate}% "
        f"entries={t.entries} exits={t.exits} anomalies={ds.anomalies}"
    )
    runs = [("year dataset", year), ("year + 4 quarters + 12 months + daily series", full)]
    if args.db:
        runs.append(("console page from SQLite (decrypt + overview)", console_page(events, args.repeat)))
    for label, samples in runs:
        wall, cpu = [s[0] * 1000 for s in samples], [s[1] * 1000 for s in samples]
        print(
            f"{label}: wall median={statistics.median(wall):.0f} ms min={min(wall):.0f} ms; "
            f"CPU median={statistics.median(cpu):.0f} ms min={min(cpu):.0f} ms (n={len(samples)})"
        )


if __name__ == "__main__":
    main()
