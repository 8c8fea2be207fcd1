#!/usr/bin/env python3
"""A plain HTTP receiver for sink tests (standard library only).

Every request is appended to OUT as one JSON line:
  {"method": ..., "path": ..., "headers": {...}, "body": "<utf-8 text>"}
and answered with 204, except the first --fail N requests, which get
--fail-status (default 503). With --port 0 it picks a free port and prints it
on stdout ("port N") once listening.

  http_receiver.py --out FILE [--port N] [--fail N] [--fail-status S]
"""
import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = None
lock = threading.Lock()
seen = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def handle_any(self):
        global seen
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with lock:
            seen += 1
            n = seen
        if n <= args.fail:
            self.send_response(args.fail_status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with lock:
            with open(args.out, "a") as f:
                f.write(json.dumps({"method": self.command, "path": self.path,
                                    "headers": {k.lower(): v for k, v in self.headers.items()},
                                    "body": body.decode("utf-8", "replace")}) + "\n")
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = handle_any
    do_PUT = handle_any
    do_GET = handle_any


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--fail", type=int, default=0)
    p.add_argument("--fail-status", type=int, default=503)
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("port %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
