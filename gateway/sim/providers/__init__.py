"""Faithful local fakes of the TTS providers' wire protocols (Inworld, Smallest, Together),
for tests, benchmarks and offline trials.

Each module has ``make_app(**profile)`` returning an aiohttp application; serve it with
:func:`gateway.http.loopback.serve_on_loopback`. :mod:`.common` holds what they share:
socket bookkeeping at ``app["stats"]`` and :func:`~.common.close_all` to drop every socket.
"""
