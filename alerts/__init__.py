"""Alerts: rule kinds, the state machine, the outbox and delivery, one module per channel.

- ``states``: every stored word (states, notification kinds and statuses, end reasons)
- ``model``: Evaluation, Notification, Letter (a message that is not an alert), results
- ``settings``: channel and rule-kind settings, checked here (``validate``, ``load``)
- ``rules``: rule kinds, pure functions of warehouse figures and ``now``
- ``machine``: the state machine (alert_states, episodes, transitions)
- ``outbox``: queue, claim, deliver, the delivery log, broken channels, test messages
- ``silences``: silences; ``check``: evaluate -> record -> deliver
- ``words``: the words channels share; ``channels``, ``slack``, ``email``: the channels
- ``history``: what the dashboard and the CLI show of it
"""
