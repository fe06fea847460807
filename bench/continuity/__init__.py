"""Continuity benchmark: simulated devices and thieves against refresh-token policies.

Legitimate devices (browsers with tabs, mobile apps that lose responses, agents with
several processes, command-line tools with stale copies) and thieves with a stolen
refresh token are generated once from a seed, as timed intentions, then played in a
discrete-event simulation with a simulated clock against each policy: keyturn's real
engine (SQLite file or PostgreSQL schema) under each preset of `keyturn_policies`,
and pure-Python models of the peers' documented policies (`peer_models`). Every
policy sees the same event stream, so the comparison is paired.

Run `python -m bench.continuity --help`.
"""
