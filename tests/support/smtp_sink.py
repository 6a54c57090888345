#!/usr/bin/python3
"""A real SMTP server on loopback for Kiln's notification tests (Debian's python3-aiosmtpd).

Usage: smtp_sink.py PORT DIR

Listens on 127.0.0.1:PORT (plain SMTP, no TLS, no authentication) and writes each message it
accepts, exactly as received, to DIR/<n>.eml (n = 1, 2, ... in the order of arrival), with the
envelope (MAIL FROM, RCPT TO) in DIR/<n>.json. Both are written to a temporary file and renamed,
the .json first: a reader that sees <n>.eml sees a whole message and its envelope.

Prints "ready" on its standard output once it listens; exits when its standard input closes (or
on SIGTERM/SIGINT).
"""

import json
import os
import signal
import sys
import tempfile
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, directory):
        self.dir = directory
        self.lock = threading.Lock()
        self.n = 0

    def _write(self, name, data):
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, os.path.join(self.dir, name))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        with self.lock:
            self.n += 1
            n = self.n
            meta = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "peer": str(session.peer),
            }
            self._write(f"{n}.json", json.dumps(meta).encode())
            self._write(f"{n}.eml", content)
        return "250 Message accepted for delivery"


class SinkController(Controller):
    def factory(self):
        # decode_data=False: the message's bytes as sent; SMTPUTF8 like a modern server.
        return SMTP(self.handler, decode_data=False, enable_SMTPUTF8=True,
                    hostname="sink.kiln.test")


def main():
    if len(sys.argv) != 3:
        print("usage: smtp_sink.py PORT DIR", file=sys.stderr)
        return 2
    port = int(sys.argv[1])
    directory = sys.argv[2]
    os.makedirs(directory, exist_ok=True)
    controller = SinkController(Sink(directory), hostname="127.0.0.1", port=port)
    controller.start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    print("ready", flush=True)
    done.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
