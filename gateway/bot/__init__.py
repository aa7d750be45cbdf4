"""The bot channel (issue 13): the bot protocol over the control socket and over the
socket the gateway dials to the route's bot."""
