"""Test doubles shared by the responder tests (pure logic: no device)."""

from __future__ import annotations


class NullSpeaker:
    """Plays nothing: every segment counts as played at once and is kept in ``segments``."""

    def __init__(self) -> None:
        self.segments: list = []

    def play(self, seg) -> None:  # noqa: ANN001 - an audio_io.Segment
        self.segments.append(seg)
        seg.played = len(seg.audio)
        seg.done.set()
