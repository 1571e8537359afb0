"""A trivial responder for the raw request/reply ceiling (run in its own process).

``python -m tests.bench.responder URL SUBJECT`` answers every request with a
small fixed reply and prints ``ready`` once subscribed. uvloop, like the engine.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import nats
from nats.aio.msg import Msg

REPLY = b"\x81\xa2ok\xc3"  # msgpack {"ok": true}


async def serve(url: str, subject: str) -> None:
    nc = await nats.connect(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def answer(msg: Msg) -> None:
        await nc.publish(msg.reply, REPLY)

    await nc.subscribe(subject, cb=answer)
    await nc.flush()
    print("ready", flush=True)
    await stop.wait()
    await nc.drain()


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(sys.argv[1], sys.argv[2]))


if __name__ == "__main__":
    main()
