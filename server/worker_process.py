"""One worker process of `moe-avatar-server --workers N` (server/workers.py starts them).

Its own module so that the supervisor (workers.py) and the server (main.py) import each
other in one direction only: main -> workers to supervise, worker_process -> main to serve.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from moe_avatar.server.main import configured, run_server


class _WorkerFields(logging.Filter):
    """Adds `worker` and `pid` to every log record of a worker process."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index, self.pid = index, os.getpid()

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker, record.pid = self.index, self.pid
        return True


def worker_main(argv: list[str] | None = None) -> int:
    """Entry of one worker: `python -m moe_avatar.server.worker_process --worker-index I -- <server flags>`."""
    parser = argparse.ArgumentParser(prog="moe-avatar-server worker")
    parser.add_argument("--worker-index", type=int, required=True)
    parser.add_argument("server_flags", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    flags = args.server_flags[1:] if args.server_flags[:1] == ["--"] else args.server_flags
    config = configured(flags, f"moe-avatar-server worker {args.worker_index}")
    if config is None:
        return 2
    for handler in logging.getLogger("moe_avatar").handlers:
        handler.addFilter(_WorkerFields(args.worker_index))
    return run_server(config, reuse_port=True, who="worker ")


if __name__ == "__main__":
    sys.exit(worker_main())
