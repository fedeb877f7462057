#!/usr/bin/env python3
"""A minimal SMTP sink on 127.0.0.1 for the benchmark (stdlib asyncio, no deps).

Accepts every transaction and appends one line per accepted message to LOG:
`<unix time, when the final 250 after DATA is sent>\t<In-Reply-To or ->\t<Subject>`.
The bench reads the line count (how many confirmations arrived) and the times.
Speaks just enough ESMTP for lettre and smtplib: EHLO/HELO, MAIL, RCPT, DATA, RSET,
NOOP, QUIT; PIPELINING and 8BITMIME are advertised.

    sink.py --port PORT --log FILE
"""

import argparse
import asyncio
import os
import signal
import time


class Sink:
    def __init__(self, log):
        self.log = open(log, "a", buffering=1)

    async def handle(self, reader, writer):
        w = writer.write
        w(b"220 bench-sink ESMTP\r\n")
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                verb = line[:4].upper()
                if verb in (b"EHLO",):
                    w(b"250-bench-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n")
                elif verb == b"HELO":
                    w(b"250 bench-sink\r\n")
                elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                    w(b"250 OK\r\n")
                elif verb == b"DATA":
                    w(b"354 go ahead\r\n")
                    await writer.drain()
                    data = await reader.readuntil(b"\r\n.\r\n")
                    stamp = time.time()
                    head = data.split(b"\r\n\r\n", 1)[0]
                    irt, subj = b"-", b""
                    for h in head.split(b"\r\n"):
                        low = h[:12].lower()
                        if low.startswith(b"in-reply-to:"):
                            irt = h[12:].strip()
                        elif low.startswith(b"subject:"):
                            subj = h[8:].strip()[:80]
                    self.log.write(f"{stamp:.6f}\t{irt.decode('latin-1')}\t{subj.decode('latin-1')}\n")
                    w(b"250 OK queued\r\n")
                elif verb == b"QUIT":
                    w(b"221 bye\r\n")
                    await writer.drain()
                    break
                else:
                    w(b"502 not implemented\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    sink = Sink(a.log)
    server = await asyncio.start_server(sink.handle, "127.0.0.1", a.port, limit=64 * 1024 * 1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    async with server:
        await stop.wait()
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
