import Foundation

extension Agent {
    /// The agent's own metrics, sent through the same pipeline as everything else.
    func emitSelfMetrics() {
        guard let pipeline else { return }
        let now = Clock.unixNanos()
        let r = agentResource
        var out: [Signal] = []
        func metric(_ name: String, _ kind: MetricKind, _ unit: String, _ value: Double, _ attrs: [Attribute] = []) {
            out.append(.metric(MetricPoint(name: name, kind: kind, unit: unit, value: value, timeUnixNano: now, attributes: attrs, resource: r)))
        }
        metric("ferret.pipeline.points.accepted", .counter, "{signal}", Double(pipeline.stats.accepted.load(ordering: .relaxed)))
        metric("ferret.pipeline.points.dropped", .counter, "{signal}", Double(pipeline.stats.dropped.load(ordering: .relaxed)))
        metric("ferret.pipeline.queue.length", .gauge, "{signal}", Double(pipeline.queueLength))
        metric("ferret.pipeline.queue.capacity", .gauge, "{signal}", Double(pipeline.capacity))
        for s in pipeline.sinks {
            let a = [Attribute("ferret.sink", .string(s.name)), Attribute("ferret.sink.type", .string(s.type))]
            metric("ferret.sink.written", .counter, "{signal}", Double(s.written.load(ordering: .relaxed)), a)
            metric("ferret.sink.dropped", .counter, "{signal}", Double(s.dropped.load(ordering: .relaxed)), a)
            metric("ferret.sink.errors", .counter, "{error}", Double(s.errors.load(ordering: .relaxed)), a)
            metric("ferret.sink.queue.length", .gauge, "{signal}", Double(s.queued), a)
            // Network sinks: their delivery core's buffer, counters and health.
            for h in (s.sink as? any DeliveryReporting)?.deliveryHealth ?? [] {
                metric("ferret.sink.delivery.accepted", .counter, "{signal}", Double(h.accepted), a)
                metric("ferret.sink.delivery.delivered", .counter, "{signal}", Double(h.delivered), a)
                metric("ferret.sink.delivery.dropped", .counter, "{signal}", Double(h.dropped), a)
                metric("ferret.sink.delivery.rejected", .counter, "{signal}", Double(h.rejected), a)
                metric("ferret.sink.delivery.buffered", .gauge, "{signal}", Double(h.bufferedPoints), a)
                metric("ferret.sink.delivery.buffered.bytes", .gauge, "By", Double(h.bufferedBytes), a)
                metric("ferret.sink.delivery.requests", .counter, "{request}", Double(h.requests), a)
                metric("ferret.sink.delivery.failures", .counter, "{request}", Double(h.failures), a)
                metric("ferret.sink.healthy", .gauge, "1", h.state == .healthy ? 1 : 0,
                       a + [Attribute("ferret.sink.state", .string(h.state.rawValue))])
            }
        }
        let (list, trackedCount, matched) = control.sync {
            (Array(instances.values), tracked.count, tracked.values.filter { $0.rule != nil }.count)
        }
        for i in list {
            let a = [Attribute("ferret.plugin", .string(i.plugin.name)), Attribute("ferret.rule", .string(i.rule))]
            metric("ferret.plugin.collect.duration", .gauge, "s", Double(i.lastCollectNanos.load(ordering: .relaxed)) / 1e9, a)
            metric("ferret.plugin.collect.count", .counter, "{collect}", Double(i.collects.load(ordering: .relaxed)), a)
            metric("ferret.plugin.collect.errors", .counter, "{error}", Double(i.collectErrors.load(ordering: .relaxed)), a)
            metric("ferret.plugin.collect.skipped", .counter, "{collect}", Double(i.skipped.load(ordering: .relaxed)), a)
            metric("ferret.plugin.call.timeouts", .counter, "{call}", Double(i.timeouts.load(ordering: .relaxed)), a)
            metric("ferret.plugin.call.errors", .counter, "{error}", Double(i.callErrors.load(ordering: .relaxed)), a)
            metric("ferret.plugin.healthy", .gauge, "1", i.healthy.load(ordering: .relaxed) ? 1 : 0, a)
            metric("ferret.plugin.attached", .gauge, "{process}", Double(i.attachedPids.count), a)
            metric("ferret.plugin.emit.dropped", .counter, "{signal}", Double(i.context.dropped.load(ordering: .relaxed)), a)
            metric("ferret.plugin.emit.invalid", .counter, "{batch}", Double(i.context.invalid.load(ordering: .relaxed)), a)
        }
        metric("ferret.processes.seen", .gauge, "{process}", Double(trackedCount))
        metric("ferret.processes.matched", .gauge, "{process}", Double(matched))
        out.append(.metric(MetricPoint(name: "ferret.discovery.attach.latency", kind: .histogram, unit: "s",
                                       histogram: attachLatency.snapshot, timeUnixNano: now, resource: r)))
        metric("ferret.discovery.attach.latency.max", .gauge, "s", attachLatency.max)
        metric("ferret.config.reloads", .counter, "{reload}", Double(reloads.load(ordering: .relaxed)))
        metric("ferret.config.reload_failures", .counter, "{reload}", Double(reloadFailures.load(ordering: .relaxed)))
        if let usage = SelfUsage.read() {
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
