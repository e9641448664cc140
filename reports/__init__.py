"""The weekly report: its CSV, when it is due, its summary, writing and queueing it."""
