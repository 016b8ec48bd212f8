"""Python `requests` against our plain-HTTP side, and the metrics text
through prometheus_client's own parser.

`session URL`: one requests.Session does 4 requests (GET /, POST / twice,
GET /healthz) and checks every body; the caller checks the server counted
one TCP connection for them. `metrics URL`: parses /metrics as Prometheus
exposition format and prints `name value` lines.
"""
import sys

import requests
from prometheus_client.parser import text_string_to_metric_families


def session(base: str) -> int:
    with requests.Session() as s:
        checks = [
            (s.get(base + "/"), "Hello, HTTP!"),
            (s.post(base + "/", data="Ping7"), "Pong!"),
            (s.post(base + "/", data="abc"), "Data abc received successfully."),
            (s.get(base + "/healthz"), "ok"),
        ]
    for response, want in checks:
        if response.status_code != 200 or response.text != want:
            print(f"{response.request.method} {response.url}: {response.status_code} {response.text!r}, want {want!r}")
            return 1
    print("ok 4")
    return 0


def metrics(base: str) -> int:
    response = requests.get(base + "/metrics", timeout=10)
    if "version=0.0.4" not in response.headers.get("content-type", ""):
        print("bad content type", response.headers.get("content-type"))
        return 1
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            print(f"{family.type} {sample.name} {sample.value}")
    return 0


if __name__ == "__main__":
    command, base = sys.argv[1], sys.argv[2]
    sys.exit(session(base) if command == "session" else metrics(base))
