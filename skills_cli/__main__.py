"""`python -m skills_cli` is `ns`."""

from skills_cli.cli import main

main()
