"""The bot channel: the bot protocol (protocol.py, sans I/O), the caller's audio for one
bot (audio.py), the protocol spoken on an open WebSocket (channel.py), by the control
socket a bot opens and by the socket the gateway dials to the route's bot (dialer.py)."""
