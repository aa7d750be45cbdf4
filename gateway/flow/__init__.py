"""IVR flows: a route's ``flow:`` of named steps (say, play, gather, menu, goto, bot,
webhook, hangup).

- :mod:`gateway.flow.steps`: the steps as configured, read and checked (``check-config``).
- :mod:`gateway.flow.engine`: the flow itself, sans I/O: inputs in (a key, a timeout, a
  prompt played out, a webhook's answer), actions out (Say, Play, Interrupt, Hangup, Bot,
  Webhook).
- :mod:`gateway.flow.runtime`: drives one call's engine through the Call's public methods.
"""
