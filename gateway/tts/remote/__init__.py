"""Remote streaming TTS providers: the shared WebSocket I/O around the sans-I/O protocols
of :mod:`gateway.tts.providers`, a warm connection pool per provider, and the per-call
session that leases one connection for the call's whole life."""
