"""Every word the alerts store: evaluation results, alert states, notification kinds and
statuses, how an episode ended. Defined here once; the state machine, the outbox, the
history queries and the rules use these names (SQL binds them as parameters).
"""

from __future__ import annotations

from typing import Final


class State:
    """An evaluation's verdict (OK, FIRING, NO_DATA) and a stored alert's state
    (``alert_states.state``, ``alert_transitions``: OK, PENDING, FIRING)."""

    OK: Final = "ok"
    PENDING: Final = "pending"   # firing, waiting out the rule's ``for``
    FIRING: Final = "firing"
    NO_DATA: Final = "no_data"   # an evaluation only: missing data is never "ok"


class Kind:
    """What a notification is (``alert_notifications.kind``)."""

    FIRING: Final = "firing"
    REMINDER: Final = "reminder"
    RESOLVED: Final = "resolved"
    TEST: Final = "test"
    REPORT: Final = "report"     # a Letter (the weekly report), not an alert
    ALERTS: Final = (FIRING, REMINDER, RESOLVED, TEST)


class Status:
    """Where a notification is (``alert_notifications.status``)."""

    PENDING: Final = "pending"   # waits for the next delivery
    SENDING: Final = "sending"   # a test message, being sent now
    SENT: Final = "sent"
    FAILED: Final = "failed"
    SILENCED: Final = "silenced"  # covered by a silence: stored, never sent


class EndReason:
    """Why an episode ended (``alert_episodes.end_reason``)."""

    RESOLVED: Final = "resolved"
    CLEARED_WHILE_PENDING: Final = "cleared_while_pending"
    EXPIRED: Final = "expired"   # nothing evaluates it any more


# The evaluation results, as the rules return them.
OK: Final = State.OK
FIRING: Final = State.FIRING
NO_DATA: Final = State.NO_DATA
