"""`python -m bnaudit`."""

from bnaudit.cli import main

main()
