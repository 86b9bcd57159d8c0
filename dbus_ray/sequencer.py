"""Keeps batches in source order inside an async actor.

Ray starts the calls of an async actor as their arguments arrive, not in the order they were sent,
so a stage that forwards batches waits for each batch's turn (its `seq`) before sending it on."""

from __future__ import annotations

import asyncio


class Sequencer:
    def __init__(self, first: int = 1) -> None:
        self.next = first
        self.turn = asyncio.Condition()

    async def wait(self, seq: int) -> None:
        async with self.turn:
            await self.turn.wait_for(lambda: seq <= self.next)

    async def advance(self, seq: int) -> None:
        async with self.turn:
            self.next = max(self.next, seq + 1)
            self.turn.notify_all()
