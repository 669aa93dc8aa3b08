"""Logging setup: one JSON object per line (or plain text), with request ids and the
model / provider / device fields that handlers pass via `extra=`."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import sys
import threading
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD)
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        line = f"{line}  {extra}" if extra else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(fmt: str = "json", level: str = "INFO") -> None:
    """Our loggers at `level`; every other library (aiohttp, asyncio, grpc) and uncaught
    exceptions at WARNING through the same formatter, so stderr holds only JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    ours = logging.getLogger("moe_avatar")
    ours.handlers[:] = [handler]
    ours.setLevel(level.upper())
    ours.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.WARNING, ours.level))
    sys.excepthook = lambda kind, value, tb: root.critical("uncaught exception", exc_info=(kind, value, tb))
    threading.excepthook = lambda a: root.error("uncaught exception in thread %s", getattr(a.thread, "name", "?"),
                                                exc_info=(a.exc_type, a.exc_value, a.exc_traceback))


ACCEPT_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, every_s: float = 10.0) -> None:
    """When file descriptors run out, asyncio logs a traceback for each failed accept()
    (thousands a second); log one line per `every_s` instead. Other errors are unchanged."""
    last = [-every_s]
    log = logging.getLogger("moe_avatar.server")

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in ACCEPT_ERRNOS and "accept" in context.get("message", ""):
            if time.monotonic() - last[0] >= every_s:
                last[0] = time.monotonic()
                log.error("cannot accept connections: %s; new connections wait (raise the open-file limit, "
                          "or lower --http-max-connections)", error.strerror, extra={"errno": error.errno})
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
