import Foundation
import GoIntrospection

extension Agent {
    /// The processes the agent tracks and matches, read at each snapshot.
    func observeProcesses() {
        telemetry.observe("ferret.processes.seen", unit: "{process}") { [weak self] in
            self.map { a in Double(a.control.sync { a.tracked.count }) }
        }
        telemetry.observe("ferret.processes.matched", unit: "{process}") { [weak self] in
            self.map { a in Double(a.control.sync { a.tracked.values.filter { $0.rule != nil }.count }) }
        }
        // Go introspection is one shared library for the host and the plugins:
        // these count its parses across all of them (one per binary).
        telemetry.observe("ferret.introspection.binaries.opened", unit: "{binary}", cumulative: true) {
            Double(IntrospectionCounters.binariesOpened.load(ordering: .relaxed))
        }
        telemetry.observe("ferret.introspection.pclntab.parses", unit: "{table}", cumulative: true) {
            Double(IntrospectionCounters.pclnTablesParsed.load(ordering: .relaxed))
        }
    }

    /// The agent's own metrics, sent through the same pipeline as everything
    /// else: every swift-metrics series and observed gauge of its telemetry
    /// (`ferret.*`), and its own CPU time and resident memory.
    func emitSelfMetrics() {
        guard let pipeline else { return }
        let now = Clock.unixNanos()
        let r = agentResource
        var out = telemetry.points(now: now, resource: r)
        if let usage = SelfUsage.read() {
            func metric(_ name: String, _ kind: MetricKind, _ unit: String, _ value: Double, _ attrs: [Attribute] = []) {
                out.append(.metric(MetricPoint(name: name, kind: kind, unit: unit, value: value, timeUnixNano: now, attributes: attrs, resource: r)))
            }
            metric("process.cpu.time", .counter, "s", usage.user, [Attribute("cpu.mode", .string("user"))])
            metric("process.cpu.time", .counter, "s", usage.system, [Attribute("cpu.mode", .string("system"))])
            metric("process.memory.usage", .gauge, "By", Double(usage.rss))
        }
        pipeline.submit(out)
    }
}

/// The agent's own CPU time and resident memory.
enum SelfUsage {
    static func read() -> (user: Double, system: Double, rss: Int)? {
        var ru = rusage()
        guard getrusage(RUSAGE_SELF.rawValue, &ru) == 0 else { return nil }
        let user = Double(ru.ru_utime.tv_sec) + Double(ru.ru_utime.tv_usec) / 1e6
        let sys = Double(ru.ru_stime.tv_sec) + Double(ru.ru_stime.tv_usec) / 1e6
        var rss = 0
        if let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) {
            let f = s.split(separator: " ")
            if f.count > 1, let pages = Int(f[1]) { rss = pages * Int(sysconf(Int32(_SC_PAGESIZE))) }
        }
        return (user, sys, rss)
    }
}
