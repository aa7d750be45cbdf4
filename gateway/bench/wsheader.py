"""The header of an RFC 6455 frame, read as both ends of the bench's raw sockets need it:
the load generator (server frames, unmasked) and the loopback bot (client frames, masked)."""

from __future__ import annotations


def frame_header(data: bytes, pos: int, mask_bytes: int) -> tuple[int, int] | None:
    """(payload length, where the payload starts) of the frame at ``data[pos]``, whose
    header carries ``mask_bytes`` of masking key (4 from a client, 0 from a server); None
    until the whole header has arrived. The caller has checked that the first two bytes
    (and, for a client frame, the key of a short one) are there (RFC 6455 §5.2)."""
    length = data[pos + 1] & 0x7F
    if length < 126:
        return length, pos + 2 + mask_bytes
    if length == 126:
        if len(data) - pos < 4 + mask_bytes:
            return None
        return (data[pos + 2] << 8) | data[pos + 3], pos + 4 + mask_bytes
    if len(data) - pos < 10 + mask_bytes:
        return None
    return int.from_bytes(data[pos + 2:pos + 10], "big"), pos + 10 + mask_bytes
