// Pipeline throughput benchmark: one producer emits metric points through the
// plugin ABI's host services (exactly the path a plugin uses: C records ->
// validation -> resource stamping -> bounded queue) into the jsonl sink
// writing to /dev/null. Reports sustained points/s with no point dropped: the
// producer backs off when the queue says FERRET_E_DROPPED (and re-sends), or
// when the sink's own buffer is more than half full, so what is measured is
// the rate the whole path sustains, end to end.
import FerretCore
import FerretPluginABI
import Foundation
import Logging
import SinkJSONL
import Synchronization

let total = Int(CommandLine.arguments.dropFirst().first ?? "") ?? 5_000_000
let batchSize = 1000
let logger = Logger(label: "bench")

let sink = SinkRunner(name: "jsonl", type: "jsonl", identity: "", sink: try JSONLSink(path: "/dev/null"), buffer: 262_144, logger: logger)
let pipeline = Pipeline(queueSize: 262_144, sinks: [sink], logger: logger)
pipeline.start()
let resource = Resource([Attribute("process.pid", .int(4242)), Attribute("process.executable.name", .string("bench")),
                         Attribute("ferret.group", .string("bench")), Attribute("ferret.rule", .string("bench"))])
let (ctx, context) = HostServices.standaloneContext(name: "bench/producer", pipeline: pipeline, resource: resource, logger: logger)

// One batch of C records, reused: a realistic point with one attribute.
let name = strdup("go.goroutine.count")!, unit = strdup("{goroutine}")!, key = strdup("go.state")!, val = strdup("running")!
var attr = ferret_attr()
attr.key = ferret_str(ptr: key, len: strlen(key))
attr.type = UInt32(FERRET_ATTR_STRING.rawValue)
attr.value.s = ferret_str(ptr: val, len: strlen(val))
let attrs = UnsafeMutablePointer<ferret_attr>.allocate(capacity: 1)
attrs.initialize(to: attr)
var batch = [ferret_metric_point](repeating: ferret_metric_point(), count: batchSize)
for i in 0..<batchSize {
    batch[i].hdr = ferret_header(abi_major: UInt16(FERRET_ABI_MAJOR), abi_minor: UInt16(FERRET_ABI_MINOR), struct_size: UInt32(MemoryLayout<ferret_metric_point>.size))
    batch[i].name = ferret_str(ptr: name, len: strlen(name))
    batch[i].unit = ferret_str(ptr: unit, len: strlen(unit))
    batch[i].kind = UInt32(FERRET_METRIC_GAUGE.rawValue)
    batch[i].value = Double(i)
    batch[i].time_unix_nano = 1_700_000_000_000_000_000
    batch[i].attrs = UnsafePointer(attrs)
    batch[i].attr_count = 1
}
let emit = HostServices.table.pointee.emit_metrics!

var retries = 0
let t0 = Clock.monotonicNanos()
var sent = 0
while sent < total {
    if sink.queued > 131_072 {
        retries += 1
        usleep(50)
        continue
    }
    let st = batch.withUnsafeBufferPointer { emit(ctx, $0.baseAddress, $0.count) }
    if st == Int32(FERRET_OK.rawValue) {
        sent += batchSize
    } else {
        retries += 1
        usleep(50)
    }
}
while Int(sink.written.value) + Int(sink.dropped.value) < total { usleep(100) }
let t1 = Clock.monotonicNanos()
let secs = Double(t1 - t0) / 1e9
var ru = rusage()
getrusage(RUSAGE_SELF.rawValue, &ru)
let maxRSS = ru.ru_maxrss // KiB
print(String(format: "pipeline: %d points in %.3f s = %.0f points/s (producer back-offs: %d, dropped at sink: %d, max RSS %.1f MiB)",
             total, secs, Double(total) / secs, retries, Int(sink.dropped.value), Double(maxRSS) / 1024))
_ = context
pipeline.shutdown(timeout: 5)
