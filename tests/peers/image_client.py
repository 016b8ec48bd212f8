"""A Python client of our `/` endpoint, checking replies against numpy.

`--lib websocket-client` uses the synchronous `websocket-client` package (the
original experiment's client); `--lib websockets` the asyncio `websockets`.
Sends seeded images of several sizes and a few texts; every reply must equal
what the original Python server would have printed with numpy. Prints `ok N`
and exits 0, or prints the first mismatch and exits 1.
"""
import argparse
import asyncio
import sys

import numpy as np

SIZES = [1, 2, 3, 4, 1000, 480_000, 480_001]
TEXTS = {"ping": "Pong!", "PiNg me": "Pong!", "hello": "Data hello received successfully."}


def expected_stats(message: bytes) -> str:
    arr = np.frombuffer(message, dtype=np.uint8)
    return (f"Received: {len(message)}, {arr.shape}, {arr.max()}, {arr.min()}, "
            f"{arr.mean()}, {np.median(arr)}")


def cases(seed: int, fast: bool):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in SIZES]
    images += [bytes([0] * 10), bytes([255] * 11), bytes([0, 255]), bytes([3] * 5 + [250] * 5)]
    for img in images:
        yield img, (f"Received: {len(img)}" if fast else expected_stats(img))
    for text, reply in TEXTS.items():
        yield text, reply


def run_sync(url: str, seed: int, fast: bool) -> int:
    import websocket
    ws = websocket.create_connection(url, timeout=10)
    n = 0
    for message, want in cases(seed, fast):
        if isinstance(message, bytes):
            ws.send_binary(message)
        else:
            ws.send(message)
        got = ws.recv()
        if got != want:
            print(f"mismatch for {len(message)}-byte message: got {got!r}, want {want!r}")
            return 1
        n += 1
    ws.close()
    print(f"ok {n}")
    return 0


async def run_async(url: str, seed: int, fast: bool) -> int:
    import websockets
    n = 0
    async with websockets.connect(url, max_size=None) as ws:
        for message, want in cases(seed, fast):
            await ws.send(message)
            got = await asyncio.wait_for(ws.recv(), 10)
            if got != want:
                print(f"mismatch for {len(message)}-byte message: got {got!r}, want {want!r}")
                return 1
            n += 1
    print(f"ok {n}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--lib", choices=["websocket-client", "websockets"], required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fast", action="store_true", help="expect `Received: {len}` replies")
    args = parser.parse_args()
    if args.lib == "websocket-client":
        return run_sync(args.url, args.seed, args.fast)
    return asyncio.run(run_async(args.url, args.seed, args.fast))


if __name__ == "__main__":
    sys.exit(main())
