"""Writes the OTLP .proto definitions as a FileDescriptorSet (protoc's
--descriptor_set_in) taken from PyPI's opentelemetry-proto package.

Its _pb2 modules carry each .proto file as a serialized FileDescriptorProto,
exactly as protoc parsed it upstream (without comments), so the set is the
opentelemetry-proto definitions themselves, not a transcription.
scripts/gen-protos.sh runs this with the venv of scripts/setup.sh.

Usage: python dump-descriptors.py EXPECTED_VERSION OUT.pb
"""
import importlib.metadata
import sys

from google.protobuf import descriptor_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

expected, out = sys.argv[1], sys.argv[2]
version = importlib.metadata.version("opentelemetry-proto")
if version != expected:
    sys.exit(f"opentelemetry-proto {version} installed, {expected} wanted (scripts/setup.sh pins it)")

# Dependencies first, as protoc wants them; the three service files pull in
# common, resource, metrics, trace and logs.
files, seen = [], set()


def add(fd):
    if fd.name in seen:
        return
    for dep in fd.dependencies:
        add(dep)
    seen.add(fd.name)
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    files.append(proto)


for module in (metrics_service_pb2, trace_service_pb2, logs_service_pb2):
    add(module.DESCRIPTOR)

fds = descriptor_pb2.FileDescriptorSet(file=files)
with open(out, "wb") as f:
    f.write(fds.SerializeToString(deterministic=True))
for p in files:
    print(p.name)
