"""The fault scenarios: each breaks one real component under load and returns what it saw.

Every scenario returns a `Result`: its figures (counts and times, JSON-ready) and its
violations, the rules it saw broken, in words (an empty list is a pass). The tests in
`tests/multiprocess/test_faults_under_load.py` run them short and assert no
violations; `python -m bench.faults` runs them longer and writes the figures.

The rules, for every scenario: never a 500; never a 200 with a token that was not
stored (every chain continues afterwards with exactly the token it holds, and every
session a login answered exists); no session ended by reuse; and the service
recovers when the component returns.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import shutil
import signal
import sqlite3
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

from bench.faults.load import (
    Answer,
    Chain,
    Looper,
    Record,
    introspection_looper,
    login,
    login_looper,
    readyz_looper,
    token_parts,
)
from bench.faults.seed import PROBES, Database, prepare, replays, sessions
from bench.faults.services import (
    SlowLink,
    SmallDisk,
    keyturn_server,
    private_postgres,
    private_redis,
    worker_pids,
)
from keyturn.client.dpop import DpopKey

# The load comes from one address with few clients: the rate limits under test are set
# where a scenario needs them, the others out of the way.
UNLIMITED = {
    "KEYTURN_LOGIN_REQUESTS_PER_MINUTE": "1000000",
    "KEYTURN_TOKEN_REQUESTS_PER_MINUTE": "1000000",
    "KEYTURN_PUBLIC_CLIENT_REQUESTS_PER_MINUTE": "1000000",
    "KEYTURN_LOGIN_FAILURES_PER_ACCOUNT": "1000000",
}
REPLAY_WIDTH = 62


@dataclass
class Result:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "figures": self.figures, "violations": self.violations}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _statuses(answers: Iterable[Answer]) -> dict[str, dict[str, int]]:
    """Counts of answers by kind and status (`none`: no answer at all)."""
    table: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for a in answers:
        table[a.kind][str(a.status) if a.status is not None else f"none:{a.error}"] += 1
    return {kind: dict(sorted(counts.items())) for kind, counts in sorted(table.items())}


def _never_500(result: Result, answers: Iterable[Answer]) -> None:
    for a in answers:
        if a.status is not None and a.status >= 500 and a.status != 503:
            result.violations.append(f"{a.kind} answered {a.status} {a.error}")


def _is_unavailable(a: Answer) -> bool:
    return (
        a.status == 503
        and a.error == "temporarily_unavailable"
        and a.retry_after is not None
        and a.retry_after.isdigit()
        and int(a.retry_after) > 0
        and not a.token
    )


def _check_chains(
    result: Result,
    database: Database,
    chains: Sequence[Chain],
    where: str,
    replays: set[tuple[str, int]] | None = None,
) -> None:
    """Every chain holds exactly its session's live token, and no session ended.

    A session row holds one generation: the token of that generation is the one live
    token, its parent at most replayable inside the window. A chain that holds an
    older token than the row's, or whose session ended, lost its login."""
    ids = [str(token_parts(c.token)[0]) for c in chains]
    stored = sessions(database, ids)
    for chain, sid in zip(chains, ids, strict=True):
        session = stored[sid]
        if chain.broken is not None:
            result.violations.append(f"{where}: chain of {sid} cut: {chain.broken}")
        if session is None:
            result.violations.append(f"{where}: session {sid} is not stored")
            continue
        if session.revoked_at is not None:
            result.violations.append(f"{where}: session {sid} ended: {session.revoked_reason}")
        held = token_parts(chain.token)[1]
        if held != session.generation:
            result.violations.append(
                f"{where}: session {sid} is at generation {session.generation}, "
                f"its device holds {held}"
            )
        if replays is not None:
            log = session.replays
            replays.update(
                (sid, log.newest - age) for age in range(REPLAY_WIDTH) if log.bits >> age & 1
            )


def _pause(chains: Sequence[Chain], timeout: float = 120) -> None:
    """Let every chain finish its rotation in flight (retrying as it must), then hold."""
    for chain in chains:
        chain.pause()
    for chain in chains:
        chain.wait_idle(timeout)


def _continue(result: Result, chains: Sequence[Chain]) -> int:
    """One more rotation per chain, with the token it holds; the number that went on."""
    went_on = 0
    with httpx.Client(timeout=30) as client:
        for chain in chains:
            if chain.broken is None and chain.rotate_once(client, 0):
                went_on += 1
            else:
                result.violations.append(f"a chain did not continue: {chain.broken}")
    return went_on


def _logins_stored(result: Result, database: Database, issued: list[str]) -> int:
    """Every session a login answered 200 for is stored."""
    ids = sorted({str(token_parts(token)[0]) for token in issued})
    stored = sessions(database, ids)
    missing = [sid for sid in ids if stored[sid] is None]
    for sid in missing:
        result.violations.append(f"a login answered 200 for session {sid}, which is not stored")
    return len(ids) - len(missing)


# 1. Crash mid-rotation over HTTP


def _kill_workers(
    result: Result,
    pid: int,
    chains: Sequence[Chain],
    database: Database,
    rng: random.Random,
    kills: int,
    seen: tuple[list[float], set[tuple[str, int]]],
) -> int:
    """SIGKILL a random worker of server `pid` `kills` times, at random moments; after
    each, wait for the supervisor's new worker, let the chains settle and check the
    store. Returns the kills done; respawn times and replays go into `seen`."""
    respawn, replayed = seen
    killed = 0
    for n in range(kills):
        time.sleep(rng.uniform(0.2, 1.2))
        alive = worker_pids(pid)
        if not alive:
            result.violations.append(f"kill {n}: no worker process left")
            break
        victim = rng.choice(alive)
        at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        killed += 1
        while True:
            now = worker_pids(pid)
            if victim not in now and len(now) == 2:
                respawn.append(time.monotonic() - at)
                break
            if time.monotonic() - at > 30:
                result.violations.append(f"kill {n}: the worker was not replaced in 30 s")
                break
            time.sleep(0.02)
        _pause(chains)
        _check_chains(result, database, chains, f"after kill {n}", replayed)
        for chain in chains:
            chain.resume()
    return killed


def crash_mid_rotation(
    database: Database,
    workdir: Path,
    *,
    devices: int = 16,
    kills: int = 20,
    seed: int = 7,
    grace_seconds: int = 30,
    db_delay: float = 0.0,
) -> Result:
    """`keyturn serve --workers 2`; `devices` chains rotate while a random worker is
    SIGKILLed `kills` times. uvicorn's supervisor replaces a dead worker (it checks
    every 0.5 s); after each kill the chains finish what they had in flight and the
    store is checked. With `db_delay`, PostgreSQL's answers reach keyturn that much
    later (`SlowLink`): a kill then mostly lands between a rotation's commit and its
    answer, and the device's retry must be answered as a replay."""
    name = "crash_mid_rotation" + (f"_db_{round(db_delay * 1000)}ms" if db_delay else "")
    result = Result(name)
    rng = random.Random(seed)
    record = Record()
    env = {**database.env(), **UNLIMITED, "KEYTURN_GRACE_SECONDS": str(grace_seconds)}
    respawn: list[float] = []
    replayed: set[tuple[str, int]] = set()
    with contextlib.ExitStack() as stack:
        if db_delay:
            parts = urlsplit(database.url)
            link = stack.enter_context(
                SlowLink(parts.hostname or "127.0.0.1", parts.port or 5432, db_delay)
            )
            env["KEYTURN_DATABASE_URL"] = parts._replace(
                netloc=f"{parts.username}@127.0.0.1:{link.port}"
            ).geturl()
        server = stack.enter_context(keyturn_server(env, workdir / f"{name}-server.log", workers=2))
        pid = server.proc.pid
        first = worker_pids(pid)
        if len(first) != 2:
            result.violations.append(f"--workers 2 started {len(first)} worker processes")
        chains = [
            Chain([server.base], login(server.base)["refresh_token"], record)
            for _ in range(devices)
        ]
        for chain in chains:
            chain.start()
        started = time.monotonic()
        killed = _kill_workers(result, pid, chains, database, rng, kills, (respawn, replayed))
        time.sleep(1.0)
        loaded = time.monotonic() - started
        _pause(chains)
        went_on = _continue(result, chains)
        _check_chains(result, database, chains, "at the end", replayed)
        for chain in chains:
            chain.stop()
        if server.proc.poll() is not None:
            result.violations.append("the server (supervisor) died")
    answers = record.snapshot()
    _never_500(result, answers)
    rotations = [a for a in answers if a.kind == "rotation"]
    no_answer = [a for a in rotations if a.status is None]
    result.figures = {
        "store": "postgresql",
        "db_reply_delay_ms": round(db_delay * 1000),
        "workers": 2,
        "devices": devices,
        "kills": killed,
        "seconds_under_load": round(loaded, 1),
        "worker_respawn_ms": {
            "median": _ms(statistics.median(respawn)) if respawn else None,
            "max": _ms(max(respawn)) if respawn else None,
        },
        "rotations": sum(c.rotations for c in chains),
        "requests": len(rotations),
        "requests_failed_during_a_kill": len(no_answer),
        "failures_by_kind": dict(collections.Counter(a.error or "" for a in no_answer)),
        "retried_then_answered_200": sum(1 for a in rotations if a.retry and a.status == 200),
        "answers_by_status": _statuses(answers),
        "replays_recorded": replays(database),
        "budgeted_replays_in_the_replay_logs": len(replayed),
        "chains_continued": f"{went_on}/{devices}",
        "sessions_ended": sum(1 for v in result.violations if "ended" in v),
        "sessions_with_a_second_live_token": sum(1 for v in result.violations if "holds" in v),
    }
    return result


# 2. PostgreSQL stopped under load


def postgres_stopped(
    mode: str,
    workdir: Path,
    *,
    devices: int = 4,
    warmup: float = 2.0,
    outage: float = 3.0,
    after: float = 3.0,
    db_timeout: float = 1.0,
) -> Result:
    """A private PostgreSQL cluster stopped with `pg_ctl stop -m mode` under rotations,
    logins, introspection and `/readyz` polls, then started again; keyturn keeps
    running throughout."""
    result = Result(f"postgres_stopped_{mode}")
    record = Record()
    issued: list[str] = []
    with private_postgres() as cluster:
        database = prepare(cluster.url)
        env = {
            **database.env(),
            **UNLIMITED,
            "KEYTURN_GRACE_SECONDS": "30",
            "KEYTURN_DB_TIMEOUT": str(db_timeout),
        }
        with keyturn_server(env, workdir / f"pg-{mode}-server.log") as server:
            access = login(server.base)["access_token"]
            chains = [
                Chain([server.base], login(server.base)["refresh_token"], record, retry_pause=0.1)
                for _ in range(devices)
            ]
            loopers: list[Looper] = [
                login_looper(record, server.base, 0.2, issued),
                introspection_looper(record, server.base, database.secrets["rs"], access),
                readyz_looper(record, server.base),
            ]
            for worker in [*chains, *loopers]:
                worker.start()
            time.sleep(warmup)
            stopping = time.monotonic()
            cluster.stop(mode)
            stopped = time.monotonic()
            time.sleep(outage)
            starting = time.monotonic()
            cluster.start()
            started = time.monotonic()
            time.sleep(after)
            for looper in loopers:
                looper.stop()
            _pause(chains)
            went_on = _continue(result, chains)
            _check_chains(result, database, chains, "after the outage")
            for chain in chains:
                chain.stop()
        stored_logins = _logins_stored(result, database, issued)
    answers = record.snapshot()
    _never_500(result, answers)
    during = [a for a in answers if stopped <= a.sent < starting]
    for a in during:
        if not _is_unavailable(a):
            result.violations.append(
                f"during the outage {a.kind} answered {a.status} {a.error} "
                f"(Retry-After {a.retry_after}, token {a.token})"
            )
    unavailable = [a for a in answers if a.sent + a.took >= stopping and a.status == 503]
    first_503 = min((a.sent + a.took for a in unavailable), default=None)
    # From the stop on, the last answer that was not a 503 (before the restart).
    last_other = max(
        (
            a.sent + a.took
            for a in answers
            if a.sent + a.took >= stopping and a.sent < starting and a.status != 503
        ),
        default=stopping,
    )
    recovered: dict[str, float | None] = {}
    for kind in ("rotation", "login", "introspection", "readyz"):
        ok = [
            a.sent + a.took
            for a in answers
            if a.kind == kind and a.sent >= starting and a.status == 200
        ]
        recovered[kind] = _ms(min(ok) - starting) if ok else None
        if not ok:
            result.violations.append(f"{kind} did not recover after PostgreSQL started again")
    to_first = first_503 - stopping if first_503 is not None else None
    if to_first is None or to_first > 1.0:
        result.violations.append(f"first 503 {to_first} s after the stop began (limit 1 s)")
    result.figures = {
        "stop": f"pg_ctl stop -m {mode}",
        "db_timeout_s": db_timeout,
        "pg_ctl_stop_ms": _ms(stopped - stopping),
        "outage_s": round(starting - stopped, 1),
        "first_503_after_stop_ms": _ms(to_first),
        "last_non_503_after_stop_ms": _ms(last_other - stopping),
        "answers_during_outage": len(during),
        "answers_during_outage_by_status": _statuses(during),
        "max_latency_during_outage_ms": _ms(max((a.took for a in during), default=None)),
        "p50_latency_during_outage_ms": _ms(
            statistics.median([a.took for a in during]) if during else None
        ),
        "pg_ctl_start_ms": _ms(started - starting),
        "first_200_after_start_command_ms": recovered,
        "answers_by_status": _statuses(answers),
        "chains_continued": f"{went_on}/{devices}",
        "login_sessions_answered_and_stored": stored_logins,
    }
    return result


# 3. Redis stopped


def _probe(a: str, b: str, client_id: str, limit: int) -> dict[str, Any]:
    """`limit` token requests naming public `client_id` from this address to server A,
    then one more to B and one more to A. With the count shared, B refuses (429);
    counted per process, B lets it through (400 for the made-up token) and A refuses."""

    def send(base: str) -> int:
        answer = httpx.post(
            f"{base}/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": "kt_rt_x",
                "client_id": client_id,
            },
            timeout=30,
        )
        return answer.status_code

    first = collections.Counter(send(a) for _ in range(limit))
    return {"first_at_a": dict(first), "next_at_b": send(b), "next_at_a": send(a)}


def _limits_checked(
    result: Result,
    before: dict[str, Any],
    during: dict[str, Any],
    after: dict[str, Any],
    said: tuple[int, int],
) -> None:
    """The probes saw the count shared, then per process, then shared again; the log
    said so (warnings when Redis went away, and lines when it came back)."""
    warnings, shared_again = said
    if before["next_at_b"] != 429:
        result.violations.append(f"with Redis, B did not see A's count: {before}")
    if during["next_at_b"] == 429 or during["next_at_a"] != 429:
        result.violations.append(f"without Redis, limits are not per process: {during}")
    if after["next_at_b"] != 429:
        result.violations.append(f"Redis back, B did not see A's count: {after}")
    if warnings == 0:
        result.violations.append("no warning in the log while Redis was away")
    if shared_again == 0:
        result.violations.append("the log never said the limits were shared again")


def redis_stopped(
    database: Database, workdir: Path, *, limit: int = 20, load: float = 2.0
) -> Result:
    """Two keyturn servers on one database and a private Redis: the per-address limit
    of a public client is shared between them; Redis is stopped under rotations
    (confidential, and one DPoP-bound), logins and introspection, and started again.
    Only the DPoP-bound device may be refused meanwhile (503: its proofs' replay cache
    is Redis, and refuses rather than pass a proof it cannot record)."""
    result = Result("redis_stopped")
    record = Record()
    dpop_record = Record()
    with private_redis() as redis:
        env = {
            **database.env(),
            **UNLIMITED,
            "KEYTURN_REDIS_URL": redis.url,
            "KEYTURN_PUBLIC_CLIENT_REQUESTS_PER_MINUTE": str(limit),
            "KEYTURN_DPOP_NONCES": "false",
        }
        with (
            keyturn_server(env, workdir / "redis-a.log") as a,
            keyturn_server(env, workdir / "redis-b.log") as b,
        ):
            secret = database.secrets["conf"]
            access = login(a.base)["access_token"]
            chains = [
                Chain(
                    [a.base, b.base],
                    login(a.base, "conf", secret=secret)["refresh_token"],
                    record,
                    client_id="conf",
                    secret=secret,
                )
                for _ in range(2)
            ]
            # A DPoP-bound device: its proofs' replay cache is Redis too, and refuses
            # (503) rather than pass a proof it cannot record (docs/decisions.md, DPoP).
            key = DpopKey.generate()
            bound = Chain(
                [a.base, b.base],
                login(a.base, "conf", secret=secret, dpop=key)["refresh_token"],
                dpop_record,
                client_id="conf",
                secret=secret,
                dpop=key,
                retry_pause=0.1,
            )
            chains.append(bound)
            loopers = [
                introspection_looper(record, a.base, database.secrets["rs"], access, 0.1),
                introspection_looper(record, b.base, database.secrets["rs"], access, 0.1),
                # Through `conf`: logins naming a public client share its per-address
                # count, which the probes use up.
                login_looper(record, a.base, 0.3, client_id="conf", secret=secret),
                login_looper(record, b.base, 0.3, client_id="conf", secret=secret),
            ]
            for worker in [*chains, *loopers]:
                worker.start()
            time.sleep(load / 2)
            before = _probe(a.base, b.base, PROBES[0], limit)
            stopping = time.monotonic()
            redis.stop()
            time.sleep(load / 2)
            during = _probe(a.base, b.base, PROBES[1], limit)
            time.sleep(load / 2)
            restarting = time.monotonic()
            redis.start()
            restarted = time.monotonic()
            time.sleep(1.0)
            after = _probe(a.base, b.base, PROBES[2], limit)
            shared_keys = len(redis.command("--scan", "--pattern", "keyturn:rl:*").split())
            time.sleep(load / 2)
            for looper in loopers:
                looper.stop()
            _pause(chains)
            went_on = _continue(result, chains)
            _check_chains(result, database, chains, "after Redis returned")
            for chain in chains:
                chain.stop()
            logs = (a.log(), b.log())
            warnings = sum(log.count("redis unavailable for rate limits") for log in logs)
            shared_again = sum(log.count("rate limits are shared again") for log in logs)
    answers = record.snapshot()
    _never_500(result, answers)
    outage = [x for x in answers if stopping <= x.sent < restarting]
    dpop_answers = dpop_record.snapshot()
    _never_500(result, dpop_answers)
    # Until redis-server answers again (a request sent while it starts is still refused).
    dpop_outage = [x for x in dpop_answers if x.sent + x.took >= stopping and x.sent < restarted]
    for x in dpop_answers:
        away = x.sent + x.took >= stopping and x.sent < restarted
        if x.status != 200 and not (away and _is_unavailable(x)):
            result.violations.append(
                f"DPoP {x.kind} answered {x.status} {x.error}, sent "
                f"{x.sent - restarted:+.3f} s after Redis answered again"
            )
    for x in answers:
        if x.status != 200:
            result.violations.append(f"{x.kind} answered {x.status} {x.error}")
    _limits_checked(result, before, during, after, (warnings, shared_again))
    result.figures = {
        "servers": 2,
        "limit_per_minute": limit,
        "probe_with_redis": before,
        "probe_without_redis": during,
        "probe_redis_back": after,
        "rate_limit_keys_in_redis_after": shared_keys,
        "log_warnings": warnings,
        "log_shared_again": shared_again,
        "answers_while_redis_away": len(outage),
        "answers_by_status": _statuses(answers),
        "answers_not_200": sum(1 for x in answers if x.status != 200),
        "chains_continued": f"{went_on}/{len(chains)}",
        "dpop_rotations_by_status": _statuses(dpop_answers).get("rotation", {}),
        "dpop_503_while_redis_away": sum(1 for x in dpop_outage if x.status == 503),
    }
    return result


# 4. SQLite on a full disk, on a disk that fails


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        row = db.execute("PRAGMA integrity_check").fetchone()
    db.close()
    return str(row[0])


FAULTS = {
    "full": "a tmpfs filled to the last byte",
    "read_only": "ext4 turned read-only under the server (an ext4 error, errors=remount-ro)",
    "gone": "ext4 shut down under the server (EXT4_IOC_SHUTDOWN: every I/O fails with EIO)",
}


def _break(disk: SmallDisk, fault: str) -> int:
    if fault == "full":
        return disk.fill()
    if fault == "read_only":
        disk.turn_read_only()
    else:
        disk.shut_down()
    return 0


def _mend(disk: SmallDisk, fault: str) -> None:
    if fault == "full":
        disk.free()
    else:  # an ext4 that had an error, or was shut down, is writable once mounted again
        disk.unmount()
        disk.mount()


def _keep_files(database: Path, into: Path) -> None:
    """Copy the database, its WAL and its shared-memory index, as they are, into `into`."""
    into.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        source = database.with_name(database.name + suffix)
        if source.exists():
            shutil.copyfile(source, into / source.name)


def _start_refused(env: dict[str, str], log: Path, port: int) -> str:
    """Start keyturn on the broken disk: the last line of its log if it refused."""
    try:
        with keyturn_server(env, log, port=port):
            return "started"
    except (RuntimeError, TimeoutError):
        lines = log.read_text(errors="replace").strip().splitlines()
        return f"refused to start: {lines[-1][:300] if lines else ''}"


def sqlite_disk(
    fault: str,
    workdir: Path,
    *,
    devices: int = 4,
    warmup: float = 2.0,
    outage: float = 3.0,
    after: float = 2.0,
) -> Result:
    """keyturn on SQLite on a small disk of its own, under rotations, logins and
    introspection; the disk breaks as `FAULTS[fault]` says. Then keyturn is stopped
    (and started once on the broken disk, to see what it does), the disk mended
    (filler removed; or unmounted and mounted again), the file checked with `PRAGMA
    integrity_check`, and keyturn started again on the same port: the chains, which
    went on retrying their tokens meanwhile, must continue."""
    result = Result(f"sqlite_disk_{fault}")
    record = Record()
    issued: list[str] = []
    times: dict[str, float] = {}
    disk = SmallDisk("tmpfs" if fault == "full" else "ext4", 16 if fault == "full" else 32)
    try:
        path = disk.path / "keyturn.db"
        database = prepare(f"sqlite:///{path}")
        env = {
            **database.env(),
            **UNLIMITED,
            "KEYTURN_GRACE_SECONDS": "120",
            "KEYTURN_DB_TIMEOUT": "1",
        }
        log = workdir / f"sqlite-{fault}-server.log"
        with keyturn_server(env, log) as server:
            access = login(server.base)["access_token"]
            chains = [
                Chain(
                    [server.base],
                    login(server.base)["refresh_token"],
                    record,
                    retry_pause=0.1,
                    give_up_after=120,
                )
                for _ in range(devices)
            ]
            loopers: list[Looper] = [
                login_looper(record, server.base, 0.1, issued),
                introspection_looper(record, server.base, database.secrets["rs"], access),
            ]
            for worker in [*chains, *loopers]:
                worker.start()
            time.sleep(warmup)
            refused_remount = disk.remount("ro") if fault == "read_only" else None
            times["breaking"] = time.monotonic()
            filled = _break(disk, fault)
            times["broken"] = time.monotonic()
            if fault == "full":
                # The WAL written ahead still takes commits (stored: a 200 is right);
                # the fault begins when a write finds no room.
                times["no_room"] = _first_refused_write(record, times["broken"], 60.0)
            time.sleep(outage)
            for looper in loopers:
                looper.stop()
            times["stopping"] = time.monotonic()
            port = server.port
        # The chains keep retrying their tokens while keyturn is down.
        on_broken_disk = _start_refused(env, log, port)
        _mend(disk, fault)
        # What the disk holds once mended, before anything opens it (the check's own
        # connection checkpoints the WAL and removes it): evidence should a chain find
        # its answered rotation missing.
        _keep_files(path, workdir / f"sqlite-{fault}-after-mend")
        check = integrity(path)
        if check != "ok":
            result.violations.append(f"integrity_check after the fault: {check}")
        times["restarting"] = time.monotonic()
        with keyturn_server(env, log, port=port):
            times["restarted"] = time.monotonic()
            time.sleep(after)
            _pause(chains)
            went_on = _continue(result, chains)
            _check_chains(result, database, chains, "after the restart")
            for chain in chains:
                chain.stop()
        stored_logins = _logins_stored(result, database, issued)
    finally:
        disk.close()
    result.figures = {
        "fault": FAULTS[fault],
        "filler_bytes": filled,
        "live_remount_ro": None
        if refused_remount is None
        else (refused_remount.stderr.strip().splitlines() or ["done"])[0],
        **_disk_figures(result, fault, record.snapshot(), times),
        "integrity_check": check,
        "start_on_the_broken_disk": on_broken_disk,
        "chains_continued": f"{went_on}/{devices}",
        "login_sessions_answered_and_stored": f"{stored_logins}/{len(set(issued))}",
    }
    return result


def _first_refused_write(record: Record, since: float, limit: float) -> float:
    """When a rotation or login sent after `since` was first answered 503 (waiting up to
    `limit` seconds for one); `since + limit` if none was."""
    deadline = since + limit
    while time.monotonic() < deadline:
        refused = [
            a.sent + a.took
            for a in record.snapshot()
            if a.sent >= since and a.kind in ("rotation", "login") and a.status == 503
        ]
        if refused:
            return min(refused)
        time.sleep(0.1)
    return deadline


def _disk_figures(
    result: Result, fault: str, answers: list[Answer], times: dict[str, float]
) -> dict[str, Any]:
    _never_500(result, answers)
    during = [a for a in answers if times["broken"] <= a.sent < times["stopping"]]
    writes = [a for a in during if a.kind in ("rotation", "login")]
    for a in during:
        if a.status not in (200, 503) or (a.status == 503 and not _is_unavailable(a)):
            result.violations.append(f"during the fault {a.kind} answered {a.status} {a.error}")
    first_503 = min((a.sent + a.took for a in answers if a.status == 503), default=None)
    # A full disk may still take commits into the space the WAL already has (they are
    # stored, so a 200 is right); a read-only or failed disk refuses the next write.
    if first_503 is None or (fault != "full" and first_503 - times["breaking"] > 1.0):
        result.violations.append("no 503 within 1 s of the fault")
    return {
        "break_ms": _ms(times["broken"] - times["breaking"]),
        "commits_taken_by_the_written_wal_ms": _ms(times["no_room"] - times["broken"])
        if "no_room" in times
        else None,
        "first_503_after_break_ms": _ms(first_503 - times["breaking"]) if first_503 else None,
        "answers_during_fault_by_status": _statuses(during),
        "writes_during_fault": len(writes),
        "writes_503_during_fault": sum(1 for a in writes if a.status == 503),
        "max_latency_during_fault_ms": _ms(max((a.took for a in during), default=None)),
        "restart_ms": _ms(times["restarted"] - times["restarting"]),
    }


async def _pg_admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def shared_postgres_schema(url: str, name: str) -> Database:
    """A fresh schema `name` in a PostgreSQL others use too, migrated and seeded."""
    asyncio.run(_pg_admin(url, f"CREATE SCHEMA {name}"))
    return prepare(url, name)


def drop_schema(url: str, name: str) -> None:
    asyncio.run(_pg_admin(url, f"DROP SCHEMA IF EXISTS {name} CASCADE"))
