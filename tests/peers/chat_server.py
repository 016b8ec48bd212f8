"""The original chat experiment's server on Python's `websocket-server`, as a
test peer for `wsbench chat`: greets a newcomer with `Hello from server`,
tells everyone `Hey all, a new client has joined us`, and broadcasts every
message to everyone as `client {id}: {text}`. Prints
`listening on ws://HOST:PORT` once it accepts connections; with
`--cert FILE --key FILE`, serves TLS and prints `listening on wss://...`.
"""
import argparse
import ssl
import sys

from websocket_server import WebsocketServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()

    if args.cert:
        # websocket-server wraps each socket with ssl.wrap_socket, which
        # Python 3.12 removed: the same through an SSLContext.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        ssl.wrap_socket = lambda sock, server_side, certfile, keyfile: context.wrap_socket(
            sock, server_side=server_side
        )
    server = WebsocketServer(host="127.0.0.1", port=args.port, key=args.key, cert=args.cert)

    def new_client(client, server):
        server.send_message(client, "Hello from server")
        server.send_message_to_all("Hey all, a new client has joined us")

    def message_received(client, server, message):
        server.send_message_to_all(f"client {client['id']}: {message}")

    server.set_fn_new_client(new_client)
    server.set_fn_message_received(message_received)
    scheme = "wss" if args.cert else "ws"
    print(f"listening on {scheme}://127.0.0.1:{server.port}", flush=True)
    server.run_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
