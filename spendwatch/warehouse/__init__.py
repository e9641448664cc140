"""The read side: every figure spendwatch shows, built on one spend query.

- :mod:`~spendwatch.warehouse.batch`: :class:`~spendwatch.warehouse.batch.Batch` (one reader,
  the config, the name book and feature map built once per batch) and
  :func:`~spendwatch.warehouse.batch.read` (open a reader, run one function on a batch, close).
- :mod:`~spendwatch.warehouse.spend`: THE spend builder,
  :func:`~spendwatch.warehouse.spend.spend` (local days or a UTC window, any dimensions, a
  grain, filters, organizations, cost basis), and the legacy day rule in its docstring.
- :mod:`~spendwatch.warehouse.figures`: totals, top spenders, month to date and forecast,
  daily series, cache figures, freshness, savings view, on that builder.
- :mod:`~spendwatch.warehouse.reconcile`: estimated against billed, per day and model.
"""
