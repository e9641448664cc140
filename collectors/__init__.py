"""Collectors: pull usage, cost and names from Anthropic's Admin APIs into DuckDB.

``clients`` talks to the APIs (Analytics through the official SDK, legacy through requests),
``rows`` turns pages into rows, ``sync`` plans windows and writes them, ``scheduler`` runs the
worker, and ``simulator`` is the local stand-in for both APIs used by the tests and the demo.
"""
