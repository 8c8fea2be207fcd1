// Isolation benchmark (issue #18), the in-process path and the helper path side
// by side in one run:
//  1. emit throughput: bench/plugins/emitter.c pushes N points in batches of
//     1,000 (re-sending when the host says full) through emit_metrics, into a
//     sink that counts them; the clock stops at the last point counted.
//  2. attach latency: the C example plugin (fdcount) attaches 50 sleep processes.
//  3. the helper's RSS running fdcount after 20 collects.
// usage: IsolationBench EMITTER.so FDCOUNT.so [points]
import FerretCore
import Foundation
import Logging
import Synchronization

let args = CommandLine.arguments
guard args.count >= 3 else { print("usage: IsolationBench EMITTER.so FDCOUNT.so [points]"); exit(2) }
let emitter = args[1], fdcount = args[2]
let total = args.count > 3 ? Int(args[3]) ?? 5_000_000 : 5_000_000
let logger = Logger(label: "bench")

final class CountingSink: Sink, Sendable {
    let points = Atomic<Int>(0)
    func write(_ batch: [Signal]) throws {
        var n = 0
        for s in batch { if case .metric = s { n += 1 } }
        points.add(n, ordering: .relaxed)
    }
}

func throughput(_ iso: Isolation) throws -> Double {
    let sink = CountingSink()
    let runner = SinkRunner(name: "count", type: "count", identity: "", sink: sink, buffer: 1 << 20, logger: logger)
    let pipeline = Pipeline(queueSize: 262_144, sinks: [runner], logger: logger)
    pipeline.start()
    defer { pipeline.shutdown(timeout: 5) }
    let inst = try StandaloneInstance(library: emitter, isolation: iso, configJSON: "{\"total\": \(total)}", pipeline: pipeline, logger: logger)
    let t0 = Clock.monotonicNanos()
    guard inst.create().ok else { fatalError("create failed") }
    while sink.points.load(ordering: .relaxed) + Int(runner.dropped.value) < total { usleep(200) }
    let secs = Double(Clock.monotonicNanos() - t0) / 1e9
    if runner.dropped.value > 0 { print("  (\(runner.dropped.value) dropped at the sink)") }
    inst.shutdown()
    return Double(total) / secs
}

func attachLatency(_ iso: Isolation, pids: [Int32]) throws -> (median: Double, p90: Double) {
    let pipeline = Pipeline(queueSize: 65_536, sinks: [], logger: logger)
    pipeline.start()
    defer { pipeline.shutdown(timeout: 5) }
    let inst = try StandaloneInstance(library: fdcount, isolation: iso, configJSON: "{}", pipeline: pipeline, logger: logger)
    guard inst.create().ok else { fatalError("create failed") }
    var times: [Double] = []
    for p in pids {
        let (r, s) = inst.attach(pid: p)
        guard r.ok else { fatalError("attach \(p): \(r.message)") }
        times.append(s)
    }
    inst.shutdown()
    times.sort()
    return (times[times.count / 2], times[times.count * 9 / 10])
}

func helperRSS(pids: [Int32]) throws -> Double {
    let pipeline = Pipeline(queueSize: 65_536, sinks: [], logger: logger)
    pipeline.start()
    defer { pipeline.shutdown(timeout: 5) }
    let inst = try StandaloneInstance(library: fdcount, isolation: .process, configJSON: "{}", pipeline: pipeline, logger: logger)
    guard inst.create().ok else { fatalError("create failed") }
    for p in pids { _ = inst.attach(pid: p) }
    for _ in 0..<20 { inst.collect() }
    let status = (try? String(contentsOfFile: "/proc/\(inst.helperPID ?? 0)/status", encoding: .utf8)) ?? ""
    let kb = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }?.split(separator: " ").dropFirst().first.flatMap { Double($0) } ?? 0
    // Where it goes: the mappings holding the most.
    var current = ""
    var byMapping: [String: Int] = [:]
    for line in String(decoding: FileHandle(forReadingAtPath: "/proc/\(inst.helperPID ?? 0)/smaps")?.readDataToEndOfFile() ?? Data(), as: UTF8.self).split(separator: "\n") {
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        if let first = f.first, first.contains("-"), first.first?.isHexDigit == true { current = f.count > 5 ? String(f[5...].joined(separator: " ")) : "[anon]" }
        else if f.first == "Rss:", let v = Int(f[1]) { byMapping[current, default: 0] += v }
    }
    for (k, v) in byMapping.sorted(by: { $0.value > $1.value }).prefix(8) { print("    \(v) KiB  \(k)") }
    inst.shutdown()
    return kb / 1024
}

var sleepers: [Process] = []
for _ in 0..<50 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/sleep")
    p.arguments = ["300"]
    try p.run()
    sleepers.append(p)
}
defer { for p in sleepers { p.terminate() } }
let pids = sleepers.map(\.processIdentifier)

for iso in [Isolation.inProcess, .process] {
    let r = try throughput(iso)
    print(String(format: "emit throughput (%@): %d points in batches of 1,000 = %.0f points/s", iso.rawValue, total, r))
}
for iso in [Isolation.inProcess, .process] {
    let (m, p90) = try attachLatency(iso, pids: pids)
    print(String(format: "attach latency (%@, fdcount, 50 processes): median %.3f ms, p90 %.3f ms", iso.rawValue, m * 1e3, p90 * 1e3))
}
print(String(format: "helper RSS (fdcount, 50 processes attached, 20 collects): %.2f MiB", try helperRSS(pids: pids)))
for p in sleepers { p.terminate() }
