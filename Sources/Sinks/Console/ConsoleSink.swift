import FerretCore
import Foundation

/// A readable live summary per process group, printed every `every`, plus
/// events as they happen.
public final class ConsoleSink: Sink, @unchecked Sendable {
    public static let keys = ["every", "stream", "buffer", "events", "max_metrics"]

    private struct SeriesKey: Hashable { var group: String; var pid: Int64; var name: String; var attrs: [Attribute] }
    private struct Latest { var value: Double; var unit: String; var kind: MetricKind; var time: UInt64 }

    private let every: UInt64
    private let out: FileHandle
    private let showEvents: Bool
    private let maxMetrics: Int
    private var latest: [SeriesKey: Latest] = [:]
    private var groupPids: [String: Set<Int64>] = [:]
    private var spans: [String: Int] = [:]
    private var profiles: [String: Int] = [:]
    private var lastPrint = Clock.monotonicNanos()
    private var pending = ""

    public init(every: Duration = .seconds(5), stream: String = "stdout", events: Bool = true, maxMetrics: Int = 12) {
        self.every = UInt64(max(every.nanoseconds, 100_000_000))
        self.out = stream == "stderr" ? .standardError : .standardOutput
        self.showEvents = events
        self.maxMetrics = maxMetrics
    }

    public func write(_ batch: [Signal]) throws {
        for s in batch {
            let group = s.resource.group ?? "(agent)"
            let pid = s.resource.pid ?? 0
            switch s {
            case .metric(let m):
                let v = m.histogram.map { $0.count == 0 ? 0 : $0.sum / Double($0.count) } ?? m.value
                latest[SeriesKey(group: group, pid: pid, name: m.name, attrs: m.attributes)] =
                    Latest(value: v, unit: m.unit, kind: m.kind, time: m.timeUnixNano)
                groupPids[group, default: []].insert(pid)
            case .span: spans[group, default: 0] += 1
            case .profile: profiles[group, default: 0] += 1
            case .event(let e):
                if e.isProcessExit {
                    groupPids[group]?.remove(pid)
                    latest = latest.filter { !($0.key.group == group && $0.key.pid == pid) }
                }
                if showEvents {
                    pending += "\(Self.clock(e.timeUnixNano)) \(e.severity.rawValue.uppercased()) \(e.name) [\(group)\(pid > 0 ? " pid \(pid)" : "")] \(e.body)\n"
                }
            }
        }
    }

    public func flush() throws {
        let now = Clock.monotonicNanos()
        if now - lastPrint >= every {
            lastPrint = now
            pending += summary()
        }
        if !pending.isEmpty {
            out.write(pending.data(using: .utf8)!)
            pending = ""
        }
    }

    private func summary() -> String {
        var text = "── ferret \(Self.clock(Clock.unixNanos())) ─────────────────────────────\n"
        let groups = Set(latest.keys.map(\.group)).union(spans.keys).union(profiles.keys).sorted()
        if groups.isEmpty { return text + "  (no signals yet)\n" }
        for g in groups {
            let pids = groupPids[g, default: []].filter { $0 > 0 }
            var header = "  \(g)"
            if !pids.isEmpty { header += "  (\(pids.count) process\(pids.count == 1 ? "" : "es"))" }
            if let n = spans[g] { header += "  spans: \(n)" }
            if let n = profiles[g] { header += "  profiles: \(n)" }
            text += header + "\n"
            // One line per metric series name+attributes, summed over the group's processes.
            var rows: [String: (sum: Double, n: Int, unit: String, kind: MetricKind)] = [:]
            for (k, v) in latest where k.group == g {
                let label = k.name + (k.attrs.isEmpty ? "" : "{" + k.attrs.map { "\($0.key)=\($0.value.text)" }.joined(separator: ",") + "}")
                var r = rows[label] ?? (0, 0, v.unit, v.kind)
                r.sum += v.value
                r.n += 1
                rows[label] = r
            }
            for (label, r) in rows.sorted(by: { $0.key < $1.key }).prefix(maxMetrics) {
                let value = Self.format(r.sum, unit: r.unit)
                text += "      \(label.padding(toLength: max(label.count, 46), withPad: " ", startingAt: 0)) \(value)\(r.n > 1 ? "  (Σ \(r.n))" : "")\n"
            }
            if rows.count > maxMetrics { text += "      … \(rows.count - maxMetrics) more series\n" }
        }
        return text
    }

    static func format(_ v: Double, unit: String) -> String {
        switch unit {
        case "By":
            let units = ["B", "KiB", "MiB", "GiB", "TiB"]
            var x = v, i = 0
            while abs(x) >= 1024 && i < units.count - 1 { x /= 1024; i += 1 }
            return String(format: i == 0 ? "%.0f %@" : "%.1f %@", x, units[i])
        case "s":
            if v < 1e-3 { return String(format: "%.1f µs", v * 1e6) }
            if v < 1 { return String(format: "%.2f ms", v * 1e3) }
            return String(format: "%.3f s", v)
        default:
            let u = unit.hasPrefix("{") ? "" : (unit.isEmpty || unit == "1" ? "" : " \(unit)")
            if v == v.rounded() && abs(v) < 1e15 { return "\(Int64(v))\(u)" }
            return String(format: "%.3f", v) + u
        }
    }

    static func clock(_ unixNanos: UInt64) -> String {
        var t = time_t(unixNanos / 1_000_000_000)
        var tm = tm()
        localtime_r(&t, &tm)
        return String(format: "%02d:%02d:%02d", tm.tm_hour, tm.tm_min, tm.tm_sec)
    }
}

extension ConsoleSink {
    public struct Config: Equatable, Sendable {
        var every: Duration
        var stream: String
        var events: Bool
        var maxMetrics: Int
    }

    public static let sinkType = SinkType(keys: keys, decode: { c, d, ctx -> Config? in
        let every = c.node["every"].flatMap { d.duration($0, "'every'", context: ctx, minimum: .milliseconds(100)) } ?? .seconds(5)
        var stream = "stdout"
        if let s = c.node["stream"], let v = d.string(s, "'stream'", context: ctx) {
            if v == "stdout" || v == "stderr" { stream = v } else { d.fail(s.mark, "'stream' must be stdout or stderr \(ctx), got '\(v)'") }
        }
        let events = c.node["events"].flatMap { d.bool($0, "'events'", context: ctx) } ?? true
        let maxMetrics = c.node["max_metrics"].flatMap { d.int($0, "'max_metrics'", context: ctx, range: 1...10_000) } ?? 12
        return Config(every: every, stream: stream, events: events, maxMetrics: maxMetrics)
    }, make: { cf, _, _ in
        ConsoleSink(every: cf.every, stream: cf.stream, events: cf.events, maxMetrics: cf.maxMetrics)
    })
}
