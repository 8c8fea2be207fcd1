// Prometheus scrape benchmark (issue #7): fills the prometheus sink with
// 100,000 series (1,000 processes × 100 metrics, the resource labels the host
// stamps, a tenth of the points with an attribute) through `Sink.write`, the
// runner's path, then scrapes it over HTTP on loopback: each scrape is timed
// from connect to the last body byte, in both formats, idle and while a writer
// thread keeps updating every series. Memory is the process' RSS
// (/proc/self/status VmRSS; the peak VmHWM, reset before each phase) before
// filling, filled, and during the scrapes.
//
// With `--peer PORT PID`, the same scrapes are made of a peer exporter on
// 127.0.0.1:PORT (bench/go/promexporter: Prometheus' Go client library with
// the same series), and its RSS is read from /proc/PID/status.
//
// Usage: PrometheusBench [series] [scrapes per format] [--peer PORT PID]
import FerretCore
import Foundation
import Logging
import SinkPrometheus
import Synchronization

var argv = Array(CommandLine.arguments.dropFirst())
var peer: (port: Int, pid: Int)?
if let i = argv.firstIndex(of: "--peer"), i + 2 < argv.count, let port = Int(argv[i + 1]), let pid = Int(argv[i + 2]) {
    peer = (port, pid)
    argv.removeSubrange(i...(i + 2))
}
let args = argv.compactMap { Int($0.replacingOccurrences(of: "_", with: "")) }
let seriesWanted = args.first ?? 100_000
let scrapes = args.count > 1 ? args[1] : 50
let perProcess = 100
let processes = max(1, seriesWanted / perProcess)

func status(_ key: String, pid: Int? = nil) -> Double {
    let text = (try? String(contentsOfFile: "/proc/\(pid.map(String.init) ?? "self")/status", encoding: .utf8)) ?? ""
    for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
        return Double(line.split(separator: " ").dropFirst().first ?? "0").map { $0 / 1024 } ?? 0  // kB → MiB
    }
    return 0
}

func mib(_ v: Double) -> String { String(format: "%.1f MiB", v) }
func ms(_ ns: UInt64) -> String { String(format: "%.1f ms", Double(ns) / 1e6) }

var logger = Logger(label: "bench")
logger.logLevel = .warning
let rssStart = status("VmRSS")
let sink = try PrometheusSink(name: "bench", host: "127.0.0.1", port: 0, logger: logger)
let port = sink.port!
let rssServing = status("VmRSS")

// The resources the host would stamp: one per process.
let resources: [Resource] = (0..<processes).map { i in
    let pid = 100_000 + i
    return Resource([
        Attribute("process.pid", .int(Int64(pid))),
        Attribute("process.executable.name", .string("service-\(i % 40)")),
        Attribute("process.executable.path", .string("/srv/bin/service-\(i % 40)")),
        Attribute("process.command_line", .string("/srv/bin/service-\(i % 40) -listen :\(8000 + i)")),
        Attribute("process.owner", .string("svc")),
        Attribute("ferret.group", .string("service-\(i % 40)")),
        Attribute("ferret.rule", .string("go-services")),
        Attribute("host.name", .string("bench-host-01.example.internal")),
        Attribute("process.runtime.name", .string("go")),
        Attribute("process.runtime.version", .string("go1.27.3")),
    ])
}
// 100 metrics per process, named like the scheduler and heap plugins' ones.
let metrics: [(name: String, kind: MetricKind, unit: String, attrs: [Attribute])] = (0..<perProcess).map { j in
    let attrs = j % 10 == 9 ? [Attribute("cpu.mode", .string(j % 20 == 9 ? "user" : "system"))] : []
    switch j % 3 {
    case 0: return ("go.memory.class\(j).used", .gauge, "By", attrs)
    case 1: return ("process.sched.item\(j).time", .counter, "s", attrs)
    default: return ("go.sched.queue\(j).count", .gauge, "{goroutine}", attrs)
    }
}

/// One round: a point for every series, in batches of 1,000 as a sink runner gets them.
func round(_ r: Int) throws -> UInt64 {
    let t0 = Clock.monotonicNanos()
    var batch: [Signal] = []
    batch.reserveCapacity(1000)
    for (i, res) in resources.enumerated() {
        for m in metrics {
            batch.append(.metric(MetricPoint(name: m.name, kind: m.kind, unit: m.unit, value: Double(r * 1000 + i) + 0.25,
                                             timeUnixNano: Clock.unixNanos(), attributes: m.attrs, resource: res)))
            if batch.count == 1000 {
                try sink.write(batch)
                batch.removeAll(keepingCapacity: true)
            }
        }
    }
    if !batch.isEmpty { try sink.write(batch) }
    return Clock.monotonicNanos() - t0
}

let first = try round(0)
var updates: [UInt64] = []
for r in 1...5 { updates.append(try round(r)) }
let series = sink.store.count
let rssFilled = status("VmRSS")
let update = updates.sorted()[updates.count / 2]
print("series \(series) (\(processes) processes × \(perProcess) metrics), \(resources.first!.attributes.count) resource attributes of which 5 are labels")
print("ingest: first round (creates every series) \(ms(first)); update round median \(ms(update)), \(Int(Double(update) / Double(series))) ns/point")

/// GET over a fresh connection; returns (ns, body bytes).
func scrape(accept: String?, port: Int = port) -> (UInt64, Int) {
    let t0 = Clock.monotonicNanos()
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = UInt16(port).bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    precondition(rc == 0, "connect: \(String(cString: strerror(errno)))")
    let req = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + (accept.map { "Accept: \($0)\r\n" } ?? "") + "\r\n"
    _ = req.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
    var total = 0, headerEnd = -1
    var head: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 1 << 18)
    while true {
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        if headerEnd < 0 {
            head.append(contentsOf: buf[0..<n])
            if let i = (0..<max(0, head.count - 3)).first(where: { head[$0] == 13 && head[$0 + 1] == 10 && head[$0 + 2] == 13 && head[$0 + 3] == 10 }) {
                headerEnd = i + 4
                let statusLine = String(decoding: head.prefix(while: { $0 != 13 }), as: UTF8.self)
                precondition(statusLine.hasSuffix("200 OK"), "HTTP status: \(statusLine)")
            }
        }
        total += n
    }
    return (Clock.monotonicNanos() - t0, total - max(headerEnd, 0))
}

func percentile(_ xs: [UInt64], _ p: Double) -> UInt64 {
    let s = xs.sorted()
    return s[min(s.count - 1, max(0, Int((p * Double(s.count)).rounded(.up)) - 1))]
}

let om = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
func measure(_ label: String, accept: String?, port: Int = port, count: Int = scrapes) {
    _ = scrape(accept: accept, port: port)  // warm-up
    var times: [UInt64] = []
    var bytes = 0
    for _ in 0..<count {
        let (t, b) = scrape(accept: accept, port: port)
        times.append(t)
        bytes = b
    }
    print("scrape \(label): median \(ms(percentile(times, 0.5))), p99 \(ms(percentile(times, 0.99))), min \(ms(times.min()!)) over \(count); \(bytes) bytes (\(bytes / max(series, 1)) per series)")
}

/// Resets VmHWM (Linux ≥ 4.0), so a phase's peak can be read.
func resetPeak(pid: Int? = nil) {
    _ = try? "5".write(toFile: "/proc/\(pid.map(String.init) ?? "self")/clear_refs", atomically: false, encoding: .utf8)
}

resetPeak()
measure("text 0.0.4, idle", accept: nil)
measure("OpenMetrics, idle", accept: om)
let rssIdle = status("VmRSS"), peakIdle = status("VmHWM")

// Scrapes while a writer keeps updating every series (the runner's thread in the agent).
resetPeak()
let stop = Atomic<Bool>(false)
let writerRounds = Atomic<Int>(0)
let writer = Thread {
    var r = 10
    while !stop.load(ordering: .relaxed) {
        _ = try? round(r)
        r += 1
        writerRounds.add(1, ordering: .relaxed)
    }
}
writer.start()
measure("OpenMetrics, while a writer updates every series", accept: om)
stop.store(true, ordering: .relaxed)
while writer.isExecuting { usleep(10_000) }
let peakBusy = status("VmHWM")
print("writer rounds during those scrapes: \(writerRounds.load(ordering: .relaxed))")

// The rendering alone: the chunks a scrape is made of, without HTTP.
var renders: [UInt64] = []
for _ in 0..<10 {
    let t0 = Clock.monotonicNanos()
    let cursor = sink.store.cursor(.text)
    var bytes = 0
    while let chunk = cursor.next() { bytes += chunk.count }
    precondition(bytes > 0)
    renders.append(Clock.monotonicNanos() - t0)
}
print("rendering alone (text, 256 KiB chunks, no HTTP): median \(ms(percentile(renders, 0.5)))")
print("RSS: start \(mib(rssStart)), serving (empty) \(mib(rssServing)), filled \(mib(rssFilled)) "
    + "(\(Int((rssFilled - rssServing) * 1048576 / Double(max(series, 1)))) bytes/series); "
    + "idle scrapes: after \(mib(rssIdle)), peak \(mib(peakIdle)); scrapes with the writer: peak \(mib(peakBusy))")
sink.close()

if let peer {
    let filled = status("VmRSS", pid: peer.pid)
    resetPeak(pid: peer.pid)
    // Seconds a scrape: fewer of them.
    measure("peer (client_golang), text 0.0.4, idle", accept: nil, port: peer.port, count: min(scrapes, 10))
    measure("peer (client_golang), OpenMetrics, idle", accept: om, port: peer.port, count: min(scrapes, 10))
    print("peer RSS: filled \(mib(filled)); scrapes: after \(mib(status("VmRSS", pid: peer.pid))), peak \(mib(status("VmHWM", pid: peer.pid)))")
}
