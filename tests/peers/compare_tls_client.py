"""A verifying wss:// client for the comparison servers' TLS (#15).

Usage: compare_tls_client.py HOST:PORT CA.pem

Trusts only CA.pem and checks the host name (`localhost`). Over wss://:
`/` answers a ping with `Pong!` and an image with its statistics, `/echo`
echoes, `/chat` greets; then three TLS connections in a row, each offering
the session of the one before, must be resumed from the second on (what
`make compare`'s serial-short wss rows rely on), and each still upgrades.
Prints `ok`, or fails with what went wrong.
"""
import asyncio
import socket
import ssl
import sys

from websockets.asyncio.client import connect

UPGRADE = (b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")


async def endpoints(port: int, context: ssl.SSLContext) -> None:
    base = f"wss://localhost:{port}"
    async with connect(f"{base}/", ssl=context, max_size=None) as ws:
        await ws.send("a PiNg")
        assert await ws.recv() == "Pong!"
        await ws.send(bytes(range(256)) * 10)
        reply = await ws.recv()
        assert reply == "Received: 2560, (2560,), 255, 0, 127.5, 127.5", reply
    async with connect(f"{base}/echo", ssl=context) as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
    async with connect(f"{base}/chat", ssl=context) as ws:
        assert await ws.recv() == "Hello from server"
        assert await ws.recv() == "Hey all, a new client has joined us"


def resumed(port: int, context: ssl.SSLContext, session):
    """One TLS connection offering `session`; returns whether the server
    resumed it and the session to offer next."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
        tls.sendall(UPGRADE)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = tls.recv(4096)
            assert chunk, f"closed before the 101: {head!r}"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 "), head
        # TLS 1.3 tickets come after the handshake, with the first bytes
        # read: the 101 is read, so they are in.
        return tls.session_reused, tls.session


def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    port = int(port)
    context = ssl.create_default_context(cafile=sys.argv[2])
    asyncio.run(endpoints(port, context))
    reused, session = resumed(port, context, None)
    assert not reused, "a first connection cannot resume"
    for attempt in (2, 3):
        reused, session = resumed(port, context, session)
        assert reused, f"connection {attempt} was not resumed"
    print("ok")


if __name__ == "__main__":
    main()
