"""An OTLP/HTTP receiver for the otlp sink's tests.

Decodes every request body with PyPI's opentelemetry-proto (the reference
bindings, installed by scripts/setup.sh into /opt/ferret-py) and appends what
it decoded to a JSON-lines file, one line per request:

  {"path": "/v1/metrics", "status": 200, "content_type": "...",
   "headers": {...}, "request": <MessageToDict, proto field names>}

It answers as a collector does: 200 with the export response message, 415 for
a body that is not application/x-protobuf, 400 for a body that does not
decode or carries fields the definitions do not know (a wrong field number
shows up here instead of silently vanishing), 404 for other paths. With
--fail-first N it answers 503 to the first N requests (logged with their
status and without decoding) to exercise the sender's retries.

Prints "listening PORT" on stdout once it serves; stops by itself after
--max-seconds.

Usage: otlp_receiver.py --out FILE [--port 0] [--fail-first N] [--max-seconds 600]
"""
import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import unknown_fields
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

ROUTES = {
    "/v1/metrics": (metrics_service_pb2.ExportMetricsServiceRequest, metrics_service_pb2.ExportMetricsServiceResponse),
    "/v1/traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse),
    "/v1/logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse),
}


def unknown_field_paths(message, path="request"):
    """Paths of (sub)messages holding fields their definition does not have."""
    found = []
    if len(unknown_fields.UnknownFieldSet(message)) > 0:
        found.append(path)
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.is_repeated:
            if field.message_type.GetOptions().map_entry:
                continue
            for i, item in enumerate(value):
                found += unknown_field_paths(item, f"{path}.{field.name}[{i}]")
        else:
            found += unknown_field_paths(value, f"{path}.{field.name}")
    return found


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, out, fail_first):
        super().__init__(address, Handler)
        self.out = open(out, "a", encoding="utf-8")
        self.lock = threading.Lock()
        self.fail_first = fail_first
        self.requests = 0

    def record(self, entry):
        with self.lock:
            self.out.write(json.dumps(entry) + "\n")
            self.out.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", content_type="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        server = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        content_type = self.headers.get("Content-Type", "")
        entry = {
            "path": self.path,
            "content_type": content_type,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "bytes": len(body),
        }
        with server.lock:
            server.requests += 1
            failing = server.requests <= server.fail_first
        if failing:
            entry["status"] = 503
            server.record(entry)
            return self.answer(503, b"failing on purpose")
        route = ROUTES.get(self.path)
        if route is None:
            entry["status"] = 404
            server.record(entry)
            return self.answer(404, b"no such path")
        if content_type.split(";")[0].strip() != "application/x-protobuf":
            entry["status"] = 415
            server.record(entry)
            return self.answer(415, b"want application/x-protobuf")
        request_type, response_type = route
        message = request_type()
        try:
            message.ParseFromString(body)
        except DecodeError as e:
            entry["status"], entry["error"] = 400, str(e)
            server.record(entry)
            return self.answer(400, str(e).encode())
        unknown = unknown_field_paths(message)
        if unknown:
            entry["status"], entry["error"] = 400, "unknown fields at " + ", ".join(unknown[:5])
            server.record(entry)
            return self.answer(400, entry["error"].encode())
        entry["status"] = 200
        entry["request"] = MessageToDict(message, preserving_proto_field_name=True)
        server.record(entry)
        self.answer(200, response_type().SerializeToString(), "application/x-protobuf")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=600)
    a = p.parse_args()
    server = Receiver(("127.0.0.1", a.port), a.out, a.fail_first)
    timer = threading.Timer(a.max_seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
