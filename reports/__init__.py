"""The weekly report: its CSV, when it is due, its summary, writing and queueing it.

- ``weekly``: the CSV (rows, cells, the file)
- ``schedule``: when a week is due, and whether it is collected whole and settled
- ``summary``: WeeklyReport and Mover, the summary's figures (``summarise``)
- ``letter``: the summary's words, as the alerts' Letter (text, HTML, Slack blocks, the CSV)
- ``runs``: writing, queueing in the alerts' outbox, rewriting settled weeks, restoring files
- ``history``: the reports written, for the dashboard
"""
