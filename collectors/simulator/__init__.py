"""A local HTTP server that behaves like Anthropic's usage and cost APIs for a synthetic org.

Both API generations are served from one deterministic data model
(:mod:`collectors.simulator.generator`): the Analytics API (``/v1/organizations/analytics/
usage`` and ``/cost``, beta), the legacy Admin API (``/v1/organizations/usage_report/messages``
and ``/v1/organizations/cost_report``) and the name endpoints (workspaces, API keys), plus
``/_sim/`` control endpoints for tests (faults, late data, ground truth, request log).

Use :func:`start_simulator` in-process, or ``python -m collectors.simulator`` for a separate
process.
"""

from __future__ import annotations

from .generator import SimulatedOrg
from .server import SimulatorServer, start_simulator

__all__ = ["SimulatedOrg", "SimulatorServer", "start_simulator"]
