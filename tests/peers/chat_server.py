"""The original chat experiment's server on Python's `websocket-server`, as a
test peer for `wsbench chat`: greets a newcomer with `Hello from server`,
tells everyone `Hey all, a new client has joined us`, and broadcasts every
message to everyone as `client {id}: {text}`. Prints
`listening on ws://HOST:PORT` once it accepts connections.
"""
import argparse
import sys

from websocket_server import WebsocketServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    server = WebsocketServer(host="127.0.0.1", port=args.port)

    def new_client(client, server):
        server.send_message(client, "Hello from server")
        server.send_message_to_all("Hey all, a new client has joined us")

    def message_received(client, server, message):
        server.send_message_to_all(f"client {client['id']}: {message}")

    server.set_fn_new_client(new_client)
    server.set_fn_message_received(message_received)
    print(f"listening on ws://127.0.0.1:{server.port}", flush=True)
    server.run_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
