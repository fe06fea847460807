"""Faults under load: real components broken while real clients use keyturn.

Four scenarios (`scenarios`), each against `keyturn serve` in child processes:

- a worker of `serve --workers 2` SIGKILLed at random moments while devices rotate,
  on PostgreSQL (uvicorn's supervisor starts a new worker);
- a private PostgreSQL cluster stopped (`pg_ctl stop -m immediate` and `fast`) under
  rotations, logins, introspection and `/readyz` polls, then started again;
- a private Redis stopped under load between two servers sharing a rate limit;
- SQLite on a small disk that fills up, turns read-only (an ext4 error) or fails every
  I/O (an ext4 shutdown).

Run `python -m bench.faults --help`. The tests run the same scenarios, shorter.
"""
