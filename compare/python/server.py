"""The original image speed test server on asyncio `websockets`, for `make compare` (#8).

The async baseline wsbench is measured against: one event loop, numpy
statistics, the reply texts of SPEC.md, so our `wsbench bench` and
`wsbench pingpong` run unchanged against it.

- `/` and `/image`: a text message gets `Pong!` if it contains `ping` in any
  case, else `Data {text} received successfully.` A binary message is an
  image of uint8 pixels:
  - slow (default): compute on the event loop, as the original did, then
    reply `Received: {len}, ({len},), {max}, {min}, {mean}, {median}`
    (numpy's own str of each figure: `255`, `127.47…`, `127.5`);
  - fast: reply `Received: {len}` at once and compute in a
    `ProcessPoolExecutor` via `loop.run_in_executor`; the result is logged as
    `> Received: …` at info level when it is done.
  `--response` sets the mode, `?response=fast|slow` overrides it per connection.
  An empty binary message gets `Error: empty image`.
- `/echo`: the same message back.
- `/chat`, `/chat/{room}` (#17): SPEC.md's chat texts. A newcomer gets
  `Hello from server`, the room (newcomer included) `Hey all, a new client
  has joined us`; any other message goes to the rest of the room as
  `client {id}: {text}` (binary unchanged); `stop` closes the sender with
  1000 and the room hears `client {id} has left`. Fan-out is websockets'
  `broadcast()`, which writes without awaiting; a member's outgoing queue
  is its transport's write buffer, and one holding more than
  `--max-queue-bytes` is closed with 1008 instead of written to.
- Any other path: HTTP 404 during the handshake.

Prints `listening on ws://HOST:PORT` (the real port, also with `--port 0`)
once it accepts connections; with `--tls-cert FILE --tls-key FILE` (PEM) it
serves `wss://` and prints `listening on wss://HOST:PORT` (#15): Python's
`ssl` (OpenSSL), TLS 1.2 and 1.3 as rustls offers, with OpenSSL's default
stateless TLS 1.3 session tickets, as the Rust servers issue. SIGTERM or SIGINT: stop accepting, close the
connections, cancel queued background jobs (the ones running finish), exit 0.

The listen backlog stays asyncio's default (100) unless `--backlog` says
otherwise: that is what the original experiment ran with.
"""
import argparse
import asyncio
import concurrent.futures
import ctypes
import http
import itertools
import logging
import os
import signal
import ssl
import sys
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import broadcast, serve

MAX_MESSAGE = 16 * 1024 * 1024
IMAGE_PATHS = ("/", "/image")
PATHS = IMAGE_PATHS + ("/echo",)

log = logging.getLogger("server")


def statistics(message: bytes) -> str:
    """The slow reply; also what a fast job logs. numpy formats the figures."""
    arr = np.frombuffer(message, dtype=np.uint8)
    return (f"Received: {len(message)}, {arr.shape}, {arr.max()}, {arr.min()}, "
            f"{arr.mean()}, {np.median(arr)}")


def text_reply(text: str) -> str:
    if "ping" in text.lower():
        return "Pong!"
    return f"Data {text} received successfully."


def chat_room(path: str) -> str | None:
    """`lobby` for `/chat`, `red` for `/chat/red`, None for any other path."""
    if path == "/chat":
        return "lobby"
    room = path.removeprefix("/chat/")
    if room != path and room and "/" not in room:
        return room
    return None


class Rooms:
    """Every chat room and its members; ids unique for the server's life."""

    def __init__(self, max_queue_bytes: int):
        self.rooms: dict[str, dict[int, object]] = {}
        self.ids = itertools.count(1)
        self.max_queue_bytes = max_queue_bytes
        self.dropping: set[object] = set()

    def fan_out(self, members, message) -> None:
        """Queues `message` on every member at once (no await between
        them, so one sender's order holds at every receiver); a member
        whose queue is over the bound is closed with 1008 instead."""
        ready = []
        for ws in members:
            if ws in self.dropping:
                continue
            if ws.transport.get_write_buffer_size() > self.max_queue_bytes:
                self.dropping.add(ws)
                asyncio.ensure_future(ws.close(1008, "too slow: outgoing queue full"))
            else:
                ready.append(ws)
        broadcast(ready, message)

    async def member(self, ws, room: str) -> None:
        cid = next(self.ids)
        members = self.rooms.setdefault(room, {})
        self.fan_out([ws], "Hello from server")
        members[cid] = ws
        self.fan_out(members.values(), "Hey all, a new client has joined us")
        stopped = False
        try:
            async for message in ws:
                if message == "stop":
                    stopped = True
                    break
                others = [m for i, m in members.items() if i != cid]
                if isinstance(message, str):
                    message = f"client {cid}: {message}"
                self.fan_out(others, message)
        finally:
            self.dropping.discard(ws)
            members.pop(cid, None)
            if members:
                self.fan_out(list(members.values()), f"client {cid} has left")
            else:
                self.rooms.pop(room, None)
        # After the room has heard: close() waits for the peer's close reply
        # and then for its TCP close, up to websockets' close_timeout (10 s).
        if stopped:
            await ws.close(1000, "stop")


def split_path(path: str) -> tuple[str, str | None]:
    """(`/image`, `fast`) from `/image?response=fast`."""
    parts = urlsplit(path)
    response = parse_qs(parts.query).get("response", [None])[-1]
    return parts.path or "/", response


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7788, help="0 picks a free port")
    parser.add_argument("--response", choices=["slow", "fast"], default="slow")
    parser.add_argument("--pool-workers", type=int, default=os.cpu_count() or 1,
                        help="processes computing fast-mode statistics [default: cores]")
    parser.add_argument("--backlog", type=int, default=100,
                        help="listen backlog [default: asyncio's 100]")
    parser.add_argument("--max-queue-bytes", type=int, default=16 * 1024 * 1024,
                        help="chat: bytes queued for one member before it is "
                             "dropped with 1008 [default: 16 MiB, as ours]")
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="serve wss:// with this PEM certificate chain")
    parser.add_argument("--tls-key", metavar="FILE", help="the PEM key of --tls-cert")
    args = parser.parse_args()
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    return args


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The server side of wss://, as close to the Rust servers' rustls set-up
    as OpenSSL gets: TLS 1.2 and 1.3, session tickets on (the default)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def die_with_parent(parent: int) -> None:
    """Runs in each pool worker: the worker is killed when the server dies,
    even by SIGKILL (a test's cleanup), instead of living on as an orphan.
    Linux's parent-death signal; the workers are forked by the main thread,
    which lives as long as the server."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the server died before prctl
        os._exit(0)


def start_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """Forks the workers now, before the event loop exists and before the
    first image arrives, so no measured message pays for a process start."""
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),))
    for job in [pool.submit(os.getpid) for _ in range(workers)]:
        job.result()
    return pool


async def main(args: argparse.Namespace, pool: concurrent.futures.ProcessPoolExecutor) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    # Background jobs are held here until done, so none is garbage-collected
    # while it runs and its result is always logged.
    jobs: set[asyncio.Future] = set()

    def job_done(job: asyncio.Future) -> None:
        jobs.discard(job)
        if not job.cancelled() and job.exception() is None:
            log.info("> %s", job.result())

    rooms = Rooms(args.max_queue_bytes)

    def process_request(connection, request):
        path, response = split_path(request.path)
        if path not in PATHS and chat_room(path) is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, f"no endpoint at {path}\n")
        if response not in (None, "slow", "fast"):
            return connection.respond(http.HTTPStatus.BAD_REQUEST,
                                      f"response must be slow or fast, not {response}\n")
        return None

    async def handler(ws):
        path, response = split_path(ws.request.path)
        room = chat_room(path)
        if room is not None:
            await rooms.member(ws, room)
            return
        fast = (response or args.response) == "fast"
        async for message in ws:
            if path == "/echo":
                await ws.send(message)
            elif isinstance(message, str):
                await ws.send(text_reply(message))
            elif not message:
                await ws.send("Error: empty image")
            elif fast:
                await ws.send(f"Received: {len(message)}")
                job = loop.run_in_executor(pool, statistics, message)
                jobs.add(job)
                job.add_done_callback(job_done)
            else:
                await ws.send(statistics(message))

    tls = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    async with serve(handler, args.host, args.port, max_size=MAX_MESSAGE,
                     process_request=process_request, backlog=args.backlog,
                     ssl=tls) as server:
        port = server.sockets[0].getsockname()[1]
        host = f"[{args.host}]" if ":" in args.host else args.host
        scheme = "wss" if tls else "ws"
        print(f"listening on {scheme}://{host}:{port}", flush=True)
        await stop
        log.info("stopping: %d background jobs queued or running", len(jobs))


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(message)s")
    # One INFO line per connection opened and closed would cost the
    # parallel runs more than it tells; our server does not log them either.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    arguments = parse_args()
    workers = start_pool(arguments.pool_workers)
    try:
        asyncio.run(main(arguments, workers))
    except KeyboardInterrupt:
        pass
    finally:
        workers.shutdown(wait=True, cancel_futures=True)
    sys.exit(0)
