"""Remote TTS providers: one sans-I/O protocol module each (no sockets, no asyncio).

Each module turns typed requests into wire messages and wire messages into the events of
``gateway.tts.providers.events``; the shared WebSocket I/O and the connection pool drive them.
"""
