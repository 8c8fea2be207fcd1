import FerretPluginABI
import Foundation
import Logging

/// Checks a plugin library against the ABI contract: what a plugin author
/// runs (`ferret conformance lib.so`) before shipping.
public struct ConformanceReport: Sendable {
    public enum Outcome: String, Sendable { case pass = "PASS", warn = "WARN", fail = "FAIL" }
    public struct Check: Sendable {
        public var outcome: Outcome
        public var name: String
        public var detail: String
    }

    public var checks: [Check] = []
    public var passed: Bool { !checks.contains { $0.outcome == .fail } }

    mutating func add(_ o: Outcome, _ name: String, _ detail: String = "") { checks.append(Check(outcome: o, name: name, detail: detail)) }

    public var text: String {
        checks.map { "\($0.outcome.rawValue)  \($0.name)\($0.detail.isEmpty ? "" : ": \($0.detail)")" }.joined(separator: "\n")
            + "\n\(checks.filter { $0.outcome == .pass }.count) passed, \(checks.filter { $0.outcome == .fail }.count) failed, \(checks.filter { $0.outcome == .warn }.count) warnings"
    }
}

public enum Conformance {
    static let metricName = try! NSRegularExpression(pattern: "^[a-z][a-z0-9_]*(\\.[a-z0-9_]+)*$")

    /// Runs the checks. `pid` is the process to attach (default: a child
    /// `sleep` the checker starts and stops).
    /// With `isolation: .process` (the default) the plugin runs in a helper
    /// process, so a crash or a hang fails a check, with its backtrace, and
    /// the checker itself keeps running.
    public static func run(library: String, configJSON: String = "{}", pid: Int32? = nil,
                           interval: Duration = .milliseconds(200), isolation: Isolation = .process, logger: Logger) -> ConformanceReport {
        var report = ConformanceReport()
        let plugin: LoadedPlugin
        let loaded = isolation == .inProcess ? PluginRegistry.loadLibrary(library)
            : PluginRegistry.describeLibrary(library, manifest: nil, logger: logger)
        switch loaded {
        case .failure(let e):
            report.add(.fail, "load", e.description)
            return report
        case .success(let p):
            plugin = p
            report.add(.pass, "load", "'\(p.name)' \(p.version), ABI \(p.abiMajor).\(p.abiMinor), \(p.mode) collector\(isolation == .process ? ", in a helper process" : "")")
        }
        var policy = RestartPolicy()
        policy.maxCrashes = 1 // a crash fails the run; no restarts
        let plan: IsolationPlan = isolation == .inProcess
            ? .inProcess(plugin.descriptor!)
            : .process(HelperLaunch(library: library, instanceName: "conformance/\(plugin.name)", user: nil, capabilities: [],
                                    memoryLimit: PluginRegistry.defaultMemoryLimit, keepCapabilities: true), policy)
        report.add(plugin.version.isEmpty ? .warn : .pass, "descriptor version", plugin.version.isEmpty ? "empty version string" : plugin.version)
        report.add(metricName.firstMatch(in: plugin.name, range: NSRange(plugin.name.startIndex..., in: plugin.name)) != nil ? .pass : .warn,
                   "plugin name", "'\(plugin.name)' (lower case, digits, '_' and '.' are what rules expect)")

        let sink = MemorySink()
        let runner = SinkRunner(name: "conformance", type: "memory", identity: "", sink: sink, buffer: 1 << 20, logger: logger)
        let pipeline = Pipeline(queueSize: 1 << 20, sinks: [runner], logger: logger)
        pipeline.start()
        defer { pipeline.shutdown(timeout: 2) }
        let root = YAMLNode(.mapping([]), mark: SourceMark(file: "<conformance>", line: 1, column: 1))
        func config(_ json: String) -> CollectorConfig {
            CollectorConfig(plugin: plugin.name, mark: root.mark, json: json, node: root, interval: interval, timeout: .seconds(2))
        }
        let resource = Resource([Attribute("ferret.conformance", .bool(true))])

        checkConfiguration(plugin, plan, configJSON, config: config, pipeline: pipeline, resource: resource, logger: logger, &report)

        let inst = PluginInstance(plugin: plugin, rule: "conformance", config: config(configJSON), isolation: plan, pipeline: pipeline,
                                  fallback: resource, logger: logger)
        let cr = inst.create()
        guard cr.ok else {
            report.add(.fail, "create", "status \(cr.status): \(cr.message)")
            reportCrashes(inst, &report)
            inst.shutdown()
            return report
        }
        report.add(.pass, "create\(plugin.isPush ? " + start" : "")", "config \(configJSON)")

        var child: Process?
        var targetPid = pid ?? 0
        if pid == nil {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sleep")
            p.arguments = ["60"]
            try? p.run()
            child = p
            targetPid = p.processIdentifier
        }
        defer { child?.terminate() }
        guard let facts = ProcFS().facts(pid: targetPid) else {
            report.add(.fail, "target", "cannot read /proc/\(targetPid)")
            inst.shutdown()
            return report
        }
        let group = "conformance"
        let attached = DispatchSemaphore(value: 0)
        final class Box: @unchecked Sendable { var r: PluginCallResult? }
        let box = Box()
        inst.attach(facts, group: group, resource: Resource.forProcess(facts, group: group, rule: "conformance", host: "localhost")) {
            box.r = $0
            attached.signal()
        }
        if attached.wait(timeout: .now() + 2) == .timedOut {
            report.add(.fail, "attach", "did not return within 2s")
        } else if let r = box.r {
            report.add(r.ok || r.unsupported ? .pass : .fail, "attach",
                       r.ok ? "pid \(targetPid) (\(facts.exeName))" : r.unsupported ? "declined pid \(targetPid) as unsupported: \(r.message)" : "status \(r.status): \(r.message)")
        }

        exercise(inst, plugin, pid: targetPid, sink: sink, interval: interval, &report)
        inst.shutdown()
        reportCrashes(inst, &report)

        let invalid = inst.context.invalid.value
        report.add(invalid == 0 ? .pass : .fail, "emitted records", invalid == 0 ? "all batches well-formed" : "\(invalid) malformed batch(es) refused (see the log)")
        checkSignals(sink.signals, &report)
        return report
    }

    /// A configuration key no plugin knows should be refused with a message,
    /// by create and (ABI 1.1) by validate, which must agree with create.
    static func checkConfiguration(_ plugin: LoadedPlugin, _ plan: IsolationPlan, _ configJSON: String, config: (String) -> CollectorConfig,
                                   pipeline: Pipeline, resource: Resource, logger: Logger, _ report: inout ConformanceReport) {
        let probe = PluginInstance(plugin: plugin, rule: "conformance", config: config("{\"ferret_conformance_unknown_key\":1}"),
                                   isolation: plan, pipeline: pipeline, fallback: resource, logger: logger)
        let pr = probe.create()
        if pr.ok {
            report.add(.warn, "unknown config key", "create accepted {\"ferret_conformance_unknown_key\":1}; operators' typos will go unnoticed")
        } else if pr.message.isEmpty {
            report.add(.fail, "error message", "create failed (status \(pr.status)) but wrote no message")
        } else {
            report.add(.pass, "unknown config key", "refused: \(pr.message)\(pr.jsonPointer.map { " (at \($0))" } ?? "")")
        }
        probe.shutdown()
        reportCrashes(probe, &report)

        // ABI 1.1: validate checks a configuration without an instance. It must
        // agree with create: accept the configuration under test, and refuse the
        // unknown key create refused.
        if plugin.canValidate {
            let good = plugin.validate(config(configJSON), instanceName: "conformance/validate", plan: plan, logger: logger)
            let bad = plugin.validate(config("{\"ferret_conformance_unknown_key\":1}"), instanceName: "conformance/validate", plan: plan, logger: logger)
            if let good, !good.ok {
                report.add(.fail, "validate", "refused the configuration create is given, \(configJSON): \(good.message)")
            } else if let bad, bad.ok, !pr.ok {
                report.add(.fail, "validate", "accepted {\"ferret_conformance_unknown_key\":1}, which create refuses")
            } else if let bad, !bad.ok && bad.message.isEmpty {
                report.add(.fail, "validate", "refused the unknown key (status \(bad.status)) but wrote no message")
            } else {
                report.add(.pass, "validate", "accepts \(configJSON); " + (bad?.ok == false ? "refuses the unknown key: \(bad!.message)" : "accepts the unknown key, as create does"))
            }
        } else {
            report.add(.warn, "validate", "no validate function (ABI \(plugin.abiMajor).\(plugin.abiMinor)): `ferret validate` cannot check this plugin's settings")
        }
    }

    /// Lets an attached instance produce (three collects, or three intervals of
    /// pushing), then detaches it and checks that nothing more comes for the pid.
    static func exercise(_ inst: PluginInstance, _ plugin: LoadedPlugin, pid targetPid: Int32, sink: MemorySink,
                         interval: Duration, _ report: inout ConformanceReport) {
        for _ in 0..<3 {
            if plugin.isPull {
                let t0 = Clock.monotonicNanos()
                inst.tick(nowUnixNano: Clock.unixNanos())
                while inst.isBusy && Clock.monotonicNanos() - t0 < 2_000_000_000 { usleep(1000) }
            }
            Thread.sleep(forTimeInterval: Double(interval.nanoseconds) / 1e9)
        }
        if plugin.isPull {
            let errors = inst.collectErrors.value
            report.add(errors == 0 ? .pass : .fail, "collect", "\(inst.collects.value) calls, \(errors) failed")
        }
        let timeouts = inst.timeouts.value
        report.add(timeouts == 0 ? .pass : .fail, "call durations", timeouts == 0 ? "every call returned within 2s" : "\(timeouts) call(s) exceeded 2s")

        inst.detach(pid: targetPid)
        let settle = Clock.monotonicNanos()
        while inst.isBusy && Clock.monotonicNanos() - settle < 2_000_000_000 { usleep(1000) }
        Thread.sleep(forTimeInterval: 0.3)
        let beforeDetachCount = sink.signals.count
        if plugin.isPull {
            inst.tick(nowUnixNano: Clock.unixNanos())
            let t0 = Clock.monotonicNanos()
            while inst.isBusy && Clock.monotonicNanos() - t0 < 2_000_000_000 { usleep(1000) }
        }
        Thread.sleep(forTimeInterval: 0.3)
        let afterDetach = sink.signals[beforeDetachCount...].filter { $0.resource.pid == Int64(targetPid) }
        report.add(afterDetach.isEmpty ? .pass : .fail, "detach", afterDetach.isEmpty ? "no signals for pid \(targetPid) after detach" : "\(afterDetach.count) signal(s) for pid \(targetPid) after detach")
    }

    /// A crash or hang of the helper fails the run, with what the helper's
    /// handler reported and the symbolized backtrace.
    static func reportCrashes(_ inst: PluginInstance, _ report: inout ConformanceReport) {
        guard let s = inst.supervisor else { return }
        for c in s.crashReports {
            let name = c.reason == .hang ? "hang" : c.reason == .memoryLimit ? "memory" : "crash"
            report.add(.fail, name, c.summary + (c.frames.isEmpty ? "" : "\n" + c.backtrace.split(separator: "\n").map { "      \($0)" }.joined(separator: "\n")))
        }
    }

    static func checkSignals(_ signals: [Signal], _ report: inout ConformanceReport) {
        var counters: [String: Double] = [:]
        var problems: [String] = []
        var metrics = 0, events = 0, spans = 0, profiles = 0
        let now = Clock.unixNanos()
        for s in signals {
            switch s {
            case .metric(let m):
                metrics += 1
                if metricName.firstMatch(in: m.name, range: NSRange(m.name.startIndex..., in: m.name)) == nil {
                    problems.append("metric name '\(m.name)' is not OpenTelemetry style (lower.case.dotted)")
                }
                if m.timeUnixNano + 3_600_000_000_000 < now || m.timeUnixNano > now + 3_600_000_000_000 {
                    problems.append("metric '\(m.name)' has a timestamp more than an hour away from now")
                }
                if let h = m.histogram, h.bucketCounts.reduce(0, +) != h.count {
                    problems.append("histogram '\(m.name)': count \(h.count) != sum of buckets \(h.bucketCounts.reduce(0, +))")
                }
                if m.kind == .counter {
                    let key = "\(m.resource.pid ?? 0)|\(m.name)|\(m.attributes.map { "\($0.key)=\($0.value)" }.sorted())"
                    if let prev = counters[key], m.value < prev {
                        problems.append("counter '\(m.name)' went down from \(prev) to \(m.value) (counters are cumulative)")
                    }
                    counters[key] = m.value
                }
            case .event: events += 1
            case .span: spans += 1
            case .profile: profiles += 1
            }
        }
        let unique = Array(Set(problems)).sorted()
        report.add(unique.isEmpty ? .pass : .fail, "signal contents",
                   unique.isEmpty ? "\(metrics) metric point(s), \(events) event(s), \(spans) span(s), \(profiles) profile(s)" : unique.prefix(5).joined(separator: "; "))
        if metrics + events + spans + profiles == 0 {
            report.add(.warn, "signals", "the plugin emitted nothing while attached")
        }
    }
}
