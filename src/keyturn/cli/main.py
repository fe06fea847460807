"""The `keyturn` command: one command, subcommands, one-line errors."""

from __future__ import annotations

import logging
import os
import sys

import click

from keyturn import __version__
from keyturn.cli.clients import clients
from keyturn.cli.demo import demo
from keyturn.cli.keys import keys
from keyturn.cli.maintenance import audit, migrate, purge
from keyturn.cli.runtime import Options, common, mask
from keyturn.cli.serve import serve
from keyturn.cli.sessions import sessions
from keyturn.cli.users import users
from keyturn.core.errors import KeyturnError, StoreUnavailable
from keyturn.crypto.sealing import WeakMasterSecret

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SOFTWARE = 70


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(dir_okay=False), help="A TOML settings file.")
@common
@click.version_option(__version__, prog_name="keyturn")
@click.pass_context
def keyturn(ctx: click.Context, config: str | None) -> None:
    """keyturn: short-lived access tokens, rotating refresh tokens, real logout."""
    ctx.ensure_object(Options)
    if config:
        os.environ["KEYTURN_CONFIG"] = config


for command in (users, clients, keys, sessions, audit, migrate, purge, demo, serve):
    keyturn.add_command(command)


def fail(message: str, code: int) -> None:
    click.echo(f"keyturn: error: {message}", err=True)
    sys.exit(code)


def _db_argument(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--db" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--db="):
            return arg.removeprefix("--db=")
    return None


def main(argv: list[str] | None = None) -> None:
    """Run the command; every failure is one line on stderr and a non-zero exit."""
    logging.basicConfig(level=logging.WARNING)
    try:
        keyturn.main(args=argv, prog_name="keyturn", standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted", EXIT_ERROR)
    except click.UsageError as error:
        fail(error.format_message().replace("\n", " "), EXIT_USAGE)
    except click.ClickException as error:
        fail(error.format_message().replace("\n", " "), EXIT_ERROR)
    except StoreUnavailable:
        url = _db_argument(sys.argv[1:] if argv is None else argv) or os.environ.get(
            "KEYTURN_DATABASE_URL", "sqlite:///keyturn.db"
        )
        fail(f"the database is unreachable ({mask(url)})", EXIT_ERROR)
    except KeyturnError as error:
        fail(error.public, EXIT_ERROR)
    except (PermissionError, FileNotFoundError) as error:
        fail(str(error), EXIT_ERROR)
    except WeakMasterSecret as error:
        fail(str(error), EXIT_USAGE)
    except Exception as error:  # the last resort: one line, never a traceback
        fail(f"unexpected {type(error).__name__}: {error}", EXIT_SOFTWARE)


if __name__ == "__main__":
    main()
