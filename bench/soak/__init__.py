"""Soak: 30 minutes of steady load on `keyturn serve --workers 2` on PostgreSQL, with
`keyturn purge` on a schedule.

keyturn is started as docs/deployment.md runs it in production: `keyturn serve` on a
fresh PostgreSQL schema it migrates itself, default settings but for the database URL,
the schema and the master secret; users and clients are registered with the `keyturn`
command. The load is a population of devices of one public native client, each
logging in, rotating on its own clock (most of the traffic, half at `/oauth/token`,
half at `/auth/refresh`), having its access token introspected by a resource server now
and then, and logging out after a while to log in again. The devices come from many
loopback addresses, as real clients do, so the default per-address limits hold: no
limit is raised. `keyturn purge` runs every few minutes as its own process, as cron
would run it.

Every minute: each worker's RSS and CPU (the children of uvicorn's supervisor, from
/proc), the requests of the minute, errors by status, p50 and p99. An error is any
answer but the expected one (200, or 204 for logout), a 429 included, or a transport
failure. Results go to `bench/results/soak-<date>.json`; a table is printed.

    .venv/bin/python -m bench.soak --minutes 30
"""
