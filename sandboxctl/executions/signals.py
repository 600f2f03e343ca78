"""Signals of the executions app. Models send them; tasks listen, so models never import tasks."""

from django.dispatch import Signal

# Sent once per execution, after the commit of its terminal transition (whoever made it), with
# `execution_id`, `caller_id` and `callback` (whether a callback is owed).
execution_ended = Signal()
