"""Speech for the event loop: the renderer behind a bounded pool of threads.

Synthesis and ffmpeg block for tens of milliseconds to seconds; the loop hands them to at
most ``CALLGATE_TTS_WORKERS`` threads and keeps serving. More requests than threads queue.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from voice.render import Rendered, Renderer, Say


class Speech:
    def __init__(self, renderer: Renderer, workers: int) -> None:
        self.renderer = renderer
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tts")

    async def render(self, say: Say) -> Rendered:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.renderer.render, say)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
