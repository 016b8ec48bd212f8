"""Python clients against our wss:// server (#15), trusting only the CA
the test made.

`tls_client.py HOST:PORT CA.pem`: `websockets` on `/` and `/chat`,
`websocket-client` on `/echo` and `/hello`, `urllib` HTTPS on `/metrics`.
Prints `ok` and exits 0, or names the first check that failed and exits 1.
"""
import asyncio
import ssl
import sys
import urllib.request

import websocket
from websockets.asyncio.client import connect

# Not websockets' sync client: it reads the SSLSocket on a background
# thread while the caller writes it, and CPython's ssl module is not safe
# for that (python/cpython#77271, python-websockets/websockets#1648): a
# server that sends its TLS 1.3 session tickets at once (ours) loses the
# client's request now and then.


def check(what, got, want):
    if got != want:
        print(f"{what}: got {got!r}, want {want!r}")
        sys.exit(1)


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), 30)


async def websockets_checks(base, ctx):
    async with connect(base + "/", ssl=ctx, open_timeout=10) as ws:
        await ws.send("Ping7")
        check("/ ping", await recv(ws), "Pong!")
        await ws.send("abc")
        check("/ text", await recv(ws), "Data abc received successfully.")
        image = bytes(range(256)) * (480 * 1024 // 256)
        await ws.send(image)
        got = await recv(ws)
        want = f"Received: {len(image)}, ({len(image)},), 255, 0, 127.5, 127.5"
        check("/ image", got, want)

    async with connect(base + "/chat", ssl=ctx, open_timeout=10) as a:
        check("chat a hello", await recv(a), "Hello from server")
        check("chat a joined", await recv(a), "Hey all, a new client has joined us")
        async with connect(base + "/chat", ssl=ctx, open_timeout=10) as b:
            check("chat b hello", await recv(b), "Hello from server")
            check("chat b joined", await recv(b), "Hey all, a new client has joined us")
            check("chat a sees b", await recv(a), "Hey all, a new client has joined us")
            await a.send("hi")
            got = await recv(b)
            if not (got.startswith("client ") and got.endswith(": hi")):
                check("chat relay", got, "client N: hi")


def main(addr: str, cafile: str) -> int:
    ctx = ssl.create_default_context(cafile=cafile)
    base = f"wss://{addr}"
    # The name is in the certificate as `localhost`; the address is an IP SAN.
    asyncio.run(websockets_checks(base, ctx))

    opts = {"ca_certs": cafile, "cert_reqs": ssl.CERT_REQUIRED}
    ws = websocket.create_connection(base + "/echo", sslopt=opts, timeout=10)
    ws.send("écho")
    check("/echo text", ws.recv(), "écho")
    big = bytes(i * 7 % 251 for i in range(1 << 20))
    ws.send_binary(big)
    check("/echo 1 MiB binary", ws.recv(), big)
    ws.close()
    ws = websocket.create_connection(base + "/hello", sslopt=opts, timeout=10)
    ws.send("TLS")
    check("/hello", ws.recv(), "Hello TLS!")
    ws.close()

    url = f"https://{addr}/metrics"
    with urllib.request.urlopen(url, context=ctx, timeout=10) as response:
        body = response.read().decode()
    if "wsbench_connections_current" not in body:
        check("https /metrics", body[:200], "a body with wsbench_connections_current")
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
