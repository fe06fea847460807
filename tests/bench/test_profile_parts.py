"""`bench.compare.profile` puts each sampled stack in the part of the server that spent
it: the deepest frame that belongs to a part decides."""

from __future__ import annotations

from bench.compare.profile import OTHER, categorise, summarise

ROOT = "run (uvicorn/main.py:1)"
MIDDLEWARE = "__call__ (keyturn/web/metrics.py:72)"
ROUTE = "token (keyturn/web/oauth_token.py:18)"


def test_a_library_call_counts_for_what_keyturn_called_it_for() -> None:
    logged = [
        ROOT,
        MIDDLEWARE,
        "format (keyturn/observability/logs.py:69)",
        "dumps (json/__init__.py:183)",
    ]
    answered = [
        ROOT,
        MIDDLEWARE,
        ROUTE,
        "json_response (keyturn/web/responses.py:15)",
        "dumps (json/__init__.py:183)",
    ]
    signed = [
        ROOT,
        MIDDLEWARE,
        ROUTE,
        "issue_for_session (keyturn/service/issuing.py:18)",
        "sign_es256 (keyturn/crypto/compact_jws.py:53)",
    ]
    stored = [
        ROOT,
        MIDDLEWARE,
        ROUTE,
        "_attempt (keyturn/storage/postgres.py:372)",
        "_do_execute (asyncpg/connection.py:2035)",
    ]
    assert categorise(logged) == "logs and metrics"
    assert categorise(answered) == "keyturn HTTP layer (form, client auth, response)"
    assert categorise(signed) == "access-token signing (ES256)"
    assert categorise(stored) == "database: driver, queries, commit"
    server = "HTTP server (uvicorn, httptools parsing, the response's socket write)"
    assert categorise([ROOT, "data_received (httptools_impl.py:120)"]) == server
    written = [
        ROOT,
        "send (uvicorn/protocols/http/httptools_impl.py:524)",
        "write (keyturn/web/http_protocol.py:44)",
    ]
    assert categorise(written) == server
    assert categorise(["<module> (x.py:1)"]) == OTHER


def test_a_collapsed_file_is_summed_per_part_and_per_leaf() -> None:
    text = "\n".join(
        [
            f"{ROOT};{MIDDLEWARE};{ROUTE};sign_es256 (keyturn/crypto/compact_jws.py:53) 30",
            f"{ROOT};{MIDDLEWARE};{ROUTE};sign_es256 (keyturn/crypto/compact_jws.py:53) 10",
            f"{ROOT};{MIDDLEWARE} 60",
            "",
        ]
    )
    parts, leaves, total = summarise(text)
    assert total == 100
    assert parts["access-token signing (ES256)"] == 40
    assert parts["logs and metrics"] == 60
    assert leaves["sign_es256 (crypto/compact_jws.py)"] == 40


def test_the_process_root_of_a_subprocess_profile_is_not_a_frame() -> None:
    parts, leaves, total = summarise(
        'process 7:"python -m keyturn serve" 5\n'
        f'process 7:"python -m keyturn serve";{ROOT};{MIDDLEWARE} 5\n'
    )
    assert total == 10
    assert parts["logs and metrics"] == 5
    assert leaves["native code, no Python frame (py-spy)"] == 5
    assert not any(leaf.startswith("process ") for leaf in leaves)
