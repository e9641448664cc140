"""spendwatch: watch what an organization spends on the Claude API.

The core package: config, storage (DuckDB connections, migrations, queries), pricing and the
CLI. Collectors live in ``collectors/``, alert rules in ``alerts/``, the dashboard in ``app/``.
"""

__version__ = "0.1.0"
