"""A loopback SMTP server that accepts and drops every mail (billing benchmark).

``python -m tests.bench.smtpsink PORT`` prints ``ready`` once listening, and
the number of mails received when stopped (SIGTERM). Its own process, so the
mail server does not share the CPU of the code under test.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received += 1
        return "250 OK"


def main(port: int) -> None:
    sink = Sink()
    ctl = Controller(sink, hostname="127.0.0.1", port=port)
    ctl.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    ctl.stop()
    print(sink.received, flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
