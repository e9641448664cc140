"""``python -m spendwatch``: the same as the ``spendwatch`` command.

Not part of the core: this file is the shell's second entry point (with the console script
``spendwatch = "spendwatch.cli:main"``), so it is the one file outside ``spendwatch/cli/``
that imports it. Nothing imports this file.
"""

from spendwatch.cli import main

main(prog_name="spendwatch")
