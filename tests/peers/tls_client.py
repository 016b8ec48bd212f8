"""Python clients against our wss:// server (#15), trusting only the CA
the test made.

`tls_client.py HOST:PORT CA.pem`: `websockets` on `/` and `/chat`,
`websocket-client` on `/echo` and `/hello`, `urllib` HTTPS on `/metrics`.
Prints `ok` and exits 0, or names the first check that failed and exits 1.
"""
import ssl
import sys
import urllib.request

import websocket
from websockets.sync.client import connect


def check(what, got, want):
    if got != want:
        print(f"{what}: got {got!r}, want {want!r}")
        sys.exit(1)


def main(addr: str, cafile: str) -> int:
    ctx = ssl.create_default_context(cafile=cafile)
    base = f"wss://{addr}"
    # The name is in the certificate as `localhost`; the address is an IP SAN.
    with connect(base + "/", ssl=ctx, open_timeout=10) as ws:
        ws.send("Ping7")
        check("/ ping", ws.recv(timeout=10), "Pong!")
        ws.send("abc")
        check("/ text", ws.recv(timeout=10), "Data abc received successfully.")
        image = bytes(range(256)) * (480 * 1024 // 256)
        ws.send(image)
        got = ws.recv(timeout=30)
        want = f"Received: {len(image)}, ({len(image)},), 255, 0, 127.5, 127.5"
        check("/ image", got, want)

    with connect(base + "/chat", ssl=ctx, open_timeout=10) as a:
        check("chat a hello", a.recv(timeout=10), "Hello from server")
        check("chat a joined", a.recv(timeout=10), "Hey all, a new client has joined us")
        with connect(base + "/chat", ssl=ctx, open_timeout=10) as b:
            check("chat b hello", b.recv(timeout=10), "Hello from server")
            check("chat b joined", b.recv(timeout=10), "Hey all, a new client has joined us")
            check("chat a sees b", a.recv(timeout=10), "Hey all, a new client has joined us")
            a.send("hi")
            got = b.recv(timeout=10)
            if not (got.startswith("client ") and got.endswith(": hi")):
                check("chat relay", got, "client N: hi")

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
