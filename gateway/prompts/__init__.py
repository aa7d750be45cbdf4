"""Prompts: recorded and synthesized audio a call plays, its cache, and route flows."""
