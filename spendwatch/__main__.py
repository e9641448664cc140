"""``python -m spendwatch``: the same as the ``spendwatch`` command."""

from spendwatch.cli import main

main()
