"""The HTTP server around the app: how it logs what never reaches a handler."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's protocol logger (``handler_args``). A request it cannot parse is the client's
    fault: one WARNING line naming it, not an ERROR traceback per request that a scanner can
    multiply at will. Anything else keeps its traceback."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            remote = args[0] if args else "?"
            self.logger.warning("malformed request from %s: %s", remote, " ".join(str(exc.message).split())[:200])
            return
        super().log(level, msg, *args, **kwargs)


def server_log() -> ServerLog:
    return ServerLog(logging.getLogger("gateway.http"))
