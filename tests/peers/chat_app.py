"""The original chat experiment's client shape: websocket-client's
WebSocketApp with ping_interval=1 on /chat. Stays connected for SECONDS,
sending a line every second, and prints what it received; exits 1 if the
connection closed early or pongs stopped.
"""
import sys
import threading
import time

import websocket

url, seconds = sys.argv[1], float(sys.argv[2])
received, closed = [], []
pongs = []


def on_open(ws):
    def talk():
        for i in range(int(seconds)):
            time.sleep(1)
            if closed:
                return
            ws.send(f"line {i}")
        ws.close()
    threading.Thread(target=talk, daemon=True).start()


app = websocket.WebSocketApp(
    url,
    on_open=on_open,
    on_message=lambda ws, m: received.append(m),
    on_pong=lambda ws, m: pongs.append(time.time()),
    on_close=lambda ws, code, reason: closed.append((code, reason)),
)
started = time.time()
app.run_forever(ping_interval=1, ping_timeout=0.9)
lasted = time.time() - started
for m in received:
    print("<", m)
print(f"lasted {lasted:.1f}s pongs {len(pongs)}")
sys.exit(0 if lasted >= seconds and len(pongs) >= seconds - 2 else 1)
