"""`python -m keyturn` runs the `keyturn` command."""

from keyturn.cli.main import main

main()
