"""The bot channel: the bot protocol (protocol.py, sans I/O), the caller's audio for one
bot (audio.py) and the protocol spoken on an open WebSocket (channel.py)."""
