"""The life of a key: next → active → retired → deleted.

A signing key is published (state NEXT) before it signs, so resource servers have
fetched it by the time tokens carry its `kid`; a retired key stays published until the
last token it signed has expired. A refresh MAC key follows the same path, kept until
the last session that uses it has ended. Pure planning: the caller saves what these
functions return in one `KeyStore.save_keys` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from keyturn.core.ids import KeyId
from keyturn.core.models import KeyState, KeyUse, StoredKey

MakeKey = Callable[[datetime, Sequence[StoredKey]], StoredKey]
"""Makes a new key (state NEXT) at a time, given every key that exists or is planned."""

MAC_KEY_IDS = 65_536


def _of(keys: Sequence[StoredKey], use: KeyUse, state: KeyState) -> list[StoredKey]:
    return [k for k in keys if k.use is use and k.state is state]


def plan_bootstrap(
    keys: Sequence[StoredKey], use: KeyUse, now: datetime, make_key: MakeKey
) -> list[StoredKey]:
    """The keys to create so that `use` has an active and a next key."""
    planned: list[StoredKey] = []
    if not _of(keys, use, KeyState.ACTIVE):
        fresh = make_key(now, [*keys, *planned])
        planned.append(replace(fresh, state=KeyState.ACTIVE, activated_at=now))
    if not _of(keys, use, KeyState.NEXT):
        planned.append(make_key(now, [*keys, *planned]))
    return planned


def plan_rotation(
    keys: Sequence[StoredKey],
    use: KeyUse,
    now: datetime,
    retire_for_seconds: int,
    make_key: MakeKey,
) -> list[StoredKey]:
    """Retire the active key(s) of `use`, activate the next one, and add a new next.

    Returns every changed or new key. Without a next key (never bootstrapped), a new
    key is made active directly.
    """
    changed = [
        replace(
            k,
            state=KeyState.RETIRED,
            retired_at=now,
            publish_until=now + timedelta(seconds=retire_for_seconds),
        )
        for k in _of(keys, use, KeyState.ACTIVE)
    ]
    waiting = sorted(_of(keys, use, KeyState.NEXT), key=lambda k: k.created_at)
    if waiting:
        promoted, *others = waiting
        changed.append(replace(promoted, state=KeyState.ACTIVE, activated_at=now))
        if others:
            return changed  # a spare next key remains published: no new one is needed
    else:
        fresh = make_key(now, [*keys, *changed])
        changed.append(replace(fresh, state=KeyState.ACTIVE, activated_at=now))
    changed.append(make_key(now, [*keys, *changed]))
    return changed


def expired_kids(keys: Sequence[StoredKey], now: datetime) -> list[KeyId]:
    """Retired keys whose last token or session has expired: safe to delete."""
    return [
        k.kid
        for k in keys
        if k.state is KeyState.RETIRED and k.publish_until is not None and k.publish_until <= now
    ]


def next_mac_key_id(keys: Sequence[StoredKey]) -> int:
    """A refresh MAC key id (0..65535) not used by any existing or planned key."""
    return _next_free({int(k.kid) for k in keys if k.use is KeyUse.REFRESH_MAC})


def upcoming_mac_key_ids(keys: Sequence[StoredKey], count: int) -> frozenset[int]:
    """The ids the next `count` MAC keys made after `keys` would get.

    Ids are allocated in sequence (`next_mac_key_id`), so a token naming a key this
    process has not read can only be honest if it names one of these: a key rotated in
    since the read. Any other unknown id is a forgery and costs no database work.
    Retired keys deleted meanwhile free no id below the newest, so the sequence holds.
    """
    taken = {int(k.kid) for k in keys if k.use is KeyUse.REFRESH_MAC}
    upcoming: set[int] = set()
    for _ in range(min(count, MAC_KEY_IDS - len(taken))):
        fresh = _next_free(taken)
        taken.add(fresh)
        upcoming.add(fresh)
    return frozenset(upcoming)


def _next_free(taken: set[int]) -> int:
    candidate = (max(taken) + 1) % MAC_KEY_IDS if taken else 1
    for _ in range(MAC_KEY_IDS):
        if candidate not in taken:
            return candidate
        candidate = (candidate + 1) % MAC_KEY_IDS
    raise RuntimeError("every refresh MAC key id is in use")
