"""Remote TTS providers: one folder per provider, each declaring its facts once (``SPEC``).

``<type>/protocol.py`` is the provider's wire protocol, sans-I/O (no sockets, no asyncio):
it turns typed requests into wire messages and wire messages into the events of
:mod:`.events`; ``<type>/driver.py`` runs a turn on it for the shared WebSocket I/O and the
connection pool (:mod:`gateway.tts.remote`); ``<type>/fake.py`` is a faithful local server
of the protocol for tests and ``bench``. :mod:`.registry` collects every ``SPEC``.
Shared here: :mod:`.events`, :mod:`.common` (helpers of the protocols), :mod:`.driver` (the
drivers' base), :mod:`.spec`, :mod:`.fakes` and :mod:`.fake_voice` (what the fakes share).
"""
