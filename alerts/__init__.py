"""Alert rules, the alert state machine and notifier channels (issue 4)."""
