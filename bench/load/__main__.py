"""Drive a refresh-token endpoint: C chains of rotations for a fixed time.

    .venv/bin/python -m bench.load URL --tokens FILE [--shape oauth|simplejwt]
        [--client-id ID [--client-secret S]] [--concurrency C] [--processes P]
        [--seconds S] [--warmup W] [--json OUT]

FILE holds the starting refresh tokens, one a line (`-` for standard input): the
first C start the chains, the rest are spares for chains that die. Prints one line;
`--json` also writes the figures as JSON. See `bench.load.drive` for what is measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from bench.load.drive import line, run_load
from bench.load.shapes import Endpoint


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", help="the token endpoint, e.g. http://127.0.0.1:8000/oauth/token")
    parser.add_argument("--tokens", required=True, help="file of refresh tokens, or -")
    parser.add_argument("--shape", choices=("oauth", "simplejwt"), default="oauth")
    parser.add_argument("--client-id")
    parser.add_argument("--client-secret", help="sent with HTTP Basic (a confidential client)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--processes", type=int, default=1, help="generator processes")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--json", type=Path, help="write the result here too")
    args = parser.parse_args(argv)
    text = sys.stdin.read() if args.tokens == "-" else Path(args.tokens).read_text()
    tokens = [t for t in text.split() if t]
    endpoint = Endpoint(args.url, args.shape, args.client_id, args.client_secret)
    result = run_load(endpoint, tokens, args.concurrency, args.seconds, args.warmup, args.processes)
    print(line(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
