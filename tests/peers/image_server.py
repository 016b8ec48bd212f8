"""The original image speed test server on asyncio `websockets`, as a test peer.

Replies to a binary image with `Received: {len}` (the original fast reply), or
with full numpy statistics (`--reply full`), or with statistics that lie about
the max (`--reply lie`, for `wsbench bench --verify`). Text gets the `/` rule,
with `--pong TEXT` as the answer to a ping (a wrong one for `wsbench pingpong`).
Plain HTTP gets what `websockets` answers a request without an upgrade.
Prints `listening on ws://HOST:PORT` once it accepts connections; with
`--cert FILE --key FILE`, serves TLS and prints `listening on wss://...`.
"""
import argparse
import asyncio
import ssl
import sys

import numpy as np
import websockets


def stats_reply(message: bytes, lie: bool) -> str:
    arr = np.frombuffer(message, dtype=np.uint8)
    top = int(arr.max()) - 1 if lie else arr.max()
    return (f"Received: {len(message)}, {arr.shape}, {top}, {arr.min()}, "
            f"{arr.mean()}, {np.median(arr)}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reply", choices=["len", "full", "lie"], default="len")
    parser.add_argument("--pong", default="Pong!")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    context = None
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)

    async def handler(ws):
        async for message in ws:
            if isinstance(message, bytes):
                if args.reply == "len":
                    await ws.send(f"Received: {len(message)}")
                else:
                    await ws.send(stats_reply(message, args.reply == "lie"))
            elif "ping" in message.lower():
                await ws.send(args.pong)
            else:
                await ws.send(f"Data {message} received successfully.")

    async with websockets.serve(
        handler, "127.0.0.1", args.port, max_size=None, ssl=context
    ) as server:
        port = server.sockets[0].getsockname()[1]
        scheme = "wss" if context else "ws"
        print(f"listening on {scheme}://127.0.0.1:{port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
