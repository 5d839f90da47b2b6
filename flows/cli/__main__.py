"""`python -m flows.cli`: the `ragops` command."""

from flows.cli import main

main()
