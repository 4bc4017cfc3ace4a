"""A tiny SMTP sink for compose/local (what Mailpit is in compose.yaml), standard library only.

    python3 compose/lib/smtp_sink.py --dir DIR [--listen 127.0.0.1:0]

Accepts every message (no TLS, no auth, as Dropline's smtp.tls = "none" speaks it), writes
each one to DIR/<n>.eml and prints `smtp sink listening on smtp://127.0.0.1:<port>` once it
listens.
Runs until SIGTERM or SIGINT.
"""

import argparse
import asyncio
import itertools
import os
import signal

COUNTER = itertools.count(1)


async def session(reader, writer, directory):
    def send(line):
        writer.write(line.encode() + b"\r\n")

    send("220 dropline-local-sink ESMTP")
    await writer.drain()
    try:
        while True:
            raw = await reader.readline()
            if not raw:
                break
            verb = raw.decode("utf-8", "replace").strip().split(" ", 1)[0].upper()
            if verb == "EHLO":
                send("250-dropline-local-sink")
                send("250-8BITMIME")
                send("250-SMTPUTF8")
                send("250 SIZE 10485760")
            elif verb in ("HELO", "MAIL", "RCPT", "RSET", "NOOP"):
                send("250 OK")
            elif verb == "DATA":
                send("354 end with <CRLF>.<CRLF>")
                await writer.drain()
                lines = []
                while True:
                    line = await reader.readline()
                    if not line or line in (b".\r\n", b".\n"):
                        break
                    lines.append(line[1:] if line.startswith(b"..") else line)
                path = os.path.join(directory, f"{next(COUNTER):06d}.eml")
                with open(path + ".tmp", "wb") as f:
                    f.writelines(lines)
                os.replace(path + ".tmp", path)
                send("250 OK queued")
            elif verb == "QUIT":
                send("221 bye")
                await writer.drain()
                break
            else:
                send("502 command not implemented")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--listen", default="127.0.0.1:0")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(
        lambda r, w: session(r, w, args.dir), host, int(port)
    )
    bound = server.sockets[0].getsockname()
    print(f"smtp sink listening on smtp://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
