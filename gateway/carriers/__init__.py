"""One package per carrier (``gateway/carriers/<carrier>/``: its sans-I/O protocol, answer
document, auth check and simulator, declared by its ``SPEC``), what they share (base.py,
events.py, jsonstream.py, jsonfields.py, answer.py, auth.py), and the registry of them all
(registry.py)."""
