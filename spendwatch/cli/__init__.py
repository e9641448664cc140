"""The shell: the ``spendwatch`` command, the worker's assembly, the demo, the dashboard."""

from spendwatch.cli.main import main

__all__ = ["main"]
