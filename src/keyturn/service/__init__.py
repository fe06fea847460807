"""Use cases, each in the same order: parse, load, decide, persist and commit, then
raise or mint. Storage is known only through `keyturn.core.ports`; no signing, hashing
or network I/O happens while the store holds a lock for us.
"""
