"""`python -m bench.engine`: see `bench.engine.rotations`."""

from bench.engine.rotations import main

main()
