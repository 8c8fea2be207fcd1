import FerretPluginABI
import Foundation
import Logging

/// How a plugin instance runs: in the agent, or in a helper process.
public enum IsolationPlan: @unchecked Sendable {
    case inProcess(UnsafePointer<ferret_plugin_descriptor>)
    case process(HelperLaunch, RestartPolicy)

    var identity: String {
        switch self {
        case .inProcess: "in_process"
        case .process(let l, let p):
            "process|\(l.user ?? "")|\(l.capabilities.joined(separator: ","))|\(l.memoryLimit ?? 0)|\(p.maxCrashes)|\(p.window)"
        }
    }
}

/// When a crashed helper is restarted, and when it is given up on.
public struct RestartPolicy: Sendable, Equatable {
    /// Crashes within `window` that quarantine the instance (until a reload).
    public var maxCrashes = 5
    public var window: Duration = .seconds(600)
    /// The first restart waits this long; each further one twice as long.
    public var initialBackoff: Duration = .seconds(1)
    public var maxBackoff: Duration = .seconds(300)
    public init() {}

    /// The wait before the restart that follows the `n`th failure in a row:
    /// initialBackoff, doubled per earlier failure, at most maxBackoff.
    func backoff(after n: Int) -> Duration {
        var wait = initialBackoff
        for _ in 1..<max(1, n) where wait < maxBackoff { wait = wait * 2 }
        return min(wait, maxBackoff)
    }
}

/// Restarts a process-isolated instance after its helper crashed, hung or hit
/// its memory limit: an event with the symbolized backtrace, a restart after
/// a backoff (1 s doubling to 5 min) with the instance re-created and its
/// processes re-attached, and quarantine after `maxCrashes` in `window`.
/// A process whose attach crashed the helper is not attached again (until a
/// reload), so one bad target cannot keep the others unmonitored.
final class PluginSupervisor: @unchecked Sendable {
    let helper: HelperCalls
    let policy: RestartPolicy
    private weak var instance: PluginInstance?
    private let lock = NSLock()
    private var down = false
    private var quarantined = false
    private var restartAt: UInt64 = 0
    private var queued = false
    private var crashTimes: [UInt64] = []
    /// Crashes handled so far, and restarts that failed without one in a row.
    private var crashSeq = 0
    private var failures = 0
    private var targets: [Int32: TargetSpec] = [:]
    private var poisoned = Set<Int32>()
    private let telemetry: SelfTelemetry
    private let dimensions: [(String, String)]
    private let restarts: MetricCounter
    private var crashCounters: [String: MetricCounter] = [:]
    private var observed: [Int] = []

    init(helper: HelperCalls, policy: RestartPolicy, telemetry: SelfTelemetry, dimensions: [(String, String)]) {
        self.helper = helper
        self.policy = policy
        self.telemetry = telemetry
        self.dimensions = dimensions
        restarts = telemetry.counter("ferret.plugin.restarts", dimensions)
    }

    func bind(_ inst: PluginInstance) {
        instance = inst
        helper.onCrash = { [weak self] d, call, pid, hang in self?.crashed(d, call: call, pid: pid, hang: hang) }
        helper.onAsyncDeath = { [weak self] in
            guard let self, let inst = self.instance else { return }
            inst.enqueue("reap") { [weak self] in
                guard let self, let d = self.helper.reap() else { return }
                self.crashed(d, call: "none", pid: 0, hang: false)
            }
        }
        observed = [
            telemetry.observe("ferret.plugin.quarantined", dimensions, unit: "1") { [weak self] in
                self.map { s in s.lock.withLock { s.quarantined ? 1 : 0 } }
            },
            telemetry.observe("ferret.plugin.helper.rss", dimensions, unit: "By") { [weak self] in
                guard let pid = self?.helper.helperPID else { return nil }
                return Self.rss(pid)
            },
        ]
    }

    static func rss(_ pid: pid_t) -> Double? {
        guard let text = fileText("/proc/\(pid)/statm") else { return nil }
        let f = text.split(separator: " ")
        guard f.count > 1, let pages = Double(f[1]) else { return nil }
        return pages * Double(sysconf(Int32(_SC_PAGESIZE)))
    }

    var isDown: Bool { lock.withLock { down } }
    /// The last crashes (at most 16), oldest first.
    var crashReports: [CrashReport] { lock.withLock { reports } }
    private var reports: [CrashReport] = []
    var isQuarantined: Bool { lock.withLock { quarantined } }

    func want(_ spec: TargetSpec) { lock.withLock { _ = targets[spec.pid] = spec } }
    func unwant(_ pid: Int32) { lock.withLock { _ = targets.removeValue(forKey: pid) } }

    /// An attach while the helper is down: kept, and made when it restarts.
    func deferredAttach(_ spec: TargetSpec) -> PluginCallResult {
        if isQuarantined {
            return .failed("plugin instance is quarantined after \(policy.maxCrashes) crashes within \(DurationParser.format(policy.window)); a reload (SIGHUP) gives it another chance")
        }
        return PluginCallResult(status: Int32(FERRET_OK.rawValue), message: "attached when the helper restarts", jsonPointer: nil)
    }

    func restartDue(now: UInt64) -> Bool { lock.withLock { down && !quarantined && !queued && now >= restartAt } }
    func restartQueued() { lock.withLock { queued = true } }

    /// On the instance thread: a helper ended without being asked to.
    private func crashed(_ d: HelperDeath, call: String, pid: Int32, hang: Bool) {
        guard let inst = instance else { return }
        var r = CrashReport(d, hang: hang)
        if hang || (r.call == "none" && r.inControlThread) {
            r.call = call
            r.callPID = pid
        }
        let now = Clock.monotonicNanos()
        let (count, quarantine, wait) = lock.withLock { () -> (Int, Bool, Duration) in
            down = true
            crashSeq += 1
            crashTimes.append(now)
            crashTimes.removeAll { now - $0 > UInt64(policy.window.nanoseconds) }
            if r.call == "attach" && r.callPID != 0 {
                poisoned.insert(r.callPID)
                targets.removeValue(forKey: r.callPID)
            }
            let n = crashTimes.count
            if n >= policy.maxCrashes { quarantined = true }
            let wait = policy.backoff(after: n)
            restartAt = now + UInt64(wait.nanoseconds)
            return (n, quarantined, wait)
        }
        inst.healthy.store(false, ordering: .relaxed)
        lock.withLock { reports.append(r); if reports.count > 16 { reports.removeFirst() } }
        counter(r.reason.rawValue).increment()
        var body = "plugin '\(inst.plugin.name)' of rule '\(inst.rule)' crashed: \(r.summary)"
        if r.reason == .memoryLimit, let limit = helper.launch.memoryLimit {
            body += " (memory_limit \(ByteSize.format(limit))\(d.memoryLimitHit ? "" : ", RLIMIT_DATA"))"
        }
        body += quarantine ? "; quarantined after \(count) crashes within \(DurationParser.format(policy.window)) (a reload gives it another chance)"
            : "; restarting in \(DurationParser.format(wait))"
        if !r.frames.isEmpty { body += "\n" + r.backtrace }
        var attrs: [Attribute] = [
            Attribute("ferret.plugin", .string(inst.plugin.name)), Attribute("ferret.rule", .string(inst.rule)),
            Attribute("ferret.plugin.library", .string(inst.plugin.libraryPath)),
            Attribute("crash.reason", .string(r.reason.rawValue)), Attribute("crash.call", .string(r.call)),
            Attribute("crash.helper_pid", .int(Int64(d.pid))), Attribute("crash.count", .int(Int64(count))),
            Attribute("crash.records_delivered_after", .int(Int64(d.drainedAfterDeath))),
        ]
        if r.signal != 0 { attrs += [Attribute("crash.signal", .string(r.signalName)), Attribute("crash.signal_number", .int(Int64(r.signal)))] }
        if r.reason == .exit { attrs.append(Attribute("crash.exit_status", .int(Int64(r.exitStatus)))) }
        if r.callPID != 0 { attrs.append(Attribute("crash.target_pid", .int(Int64(r.callPID)))) }
        if r.threadID != 0 { attrs += [Attribute("crash.thread", .string(r.threadName)), Attribute("crash.thread_id", .int(Int64(r.threadID)))] }
        if let limit = helper.launch.memoryLimit { attrs.append(Attribute("ferret.plugin.memory_limit", .int(Int64(limit)))) }
        if !r.frames.isEmpty { attrs.append(Attribute("crash.backtrace", .string(r.backtrace))) }
        inst.logger.error("\(body)")
        submit(inst, "ferret.plugin.crashed", .error, body, attrs)
        if quarantine {
            submit(inst, "ferret.plugin.quarantined", .error,
                   "plugin '\(inst.plugin.name)' of rule '\(inst.rule)' is quarantined after \(count) crashes within \(DurationParser.format(policy.window)); it runs again after a reload (SIGHUP)",
                   Array(attrs.prefix(3)) + [Attribute("crash.count", .int(Int64(count)))])
        }
    }

    /// On the instance thread: a new helper, create (and start), then every
    /// wanted process attached again.
    func restart() {
        guard let inst = instance else { return }
        lock.withLock { queued = false }
        restarts.increment()
        let before = lock.withLock { crashSeq }
        let created = helper.create(name: inst.name, config: inst.config, context: inst.context)
        guard created.ok else { return failedRestart(inst, "create", created, crashesBefore: before) }
        if inst.plugin.isPush {
            let s = helper.start()
            guard s.ok else { return failedRestart(inst, "start", s, crashesBefore: before) }
        }
        lock.withLock { down = false; failures = 0 }
        let wanted = lock.withLock { targets.values.filter { !poisoned.contains($0.pid) }.sorted { $0.pid < $1.pid } }
        var attached = 0
        for t in wanted where inst.plugin.hasAttach {
            let r = helper.attach(t)
            if !helper.isUp { return } // crashed again: handled, another restart is scheduled
            if r.ok { attached += 1 } else {
                unwant(t.pid)
                inst.cond.lock(); inst.attached.remove(t.pid); inst.cond.unlock()
            }
        }
        inst.healthy.store(true, ordering: .relaxed)
        let skipped = lock.withLock { poisoned }
        let body = "plugin '\(inst.plugin.name)' of rule '\(inst.rule)' restarted in helper \(helper.helperPID ?? 0); re-attached \(attached) of \(wanted.count) process(es)"
            + (skipped.isEmpty ? "" : "; not re-attached (their attach crashed it): \(skipped.sorted().map(String.init).joined(separator: ", "))")
        inst.logger.warning("\(body)")
        submit(inst, "ferret.plugin.restarted", .warn, body, [Attribute("ferret.plugin", .string(inst.plugin.name)),
                                                            Attribute("ferret.rule", .string(inst.rule)),
                                                            Attribute("ferret.plugin.reattached", .int(Int64(attached)))])
    }

    /// A restart that failed without a crash (the helper cannot start, or the
    /// plugin refused its settings): tried again after the next backoff. A
    /// crash during the restart was handled by `crashed` already.
    private func failedRestart(_ inst: PluginInstance, _ step: String, _ r: PluginCallResult, crashesBefore: Int) {
        if lock.withLock({ crashSeq != crashesBefore }) { return }
        helper.abandon()
        let wait = lock.withLock { () -> Duration in
            failures += 1
            let w = policy.backoff(after: failures)
            restartAt = Clock.monotonicNanos() + UInt64(w.nanoseconds)
            down = true
            return w
        }
        inst.logger.error("plugin instance '\(inst.name)': restart failed in \(step): \(r.message); next try in \(DurationParser.format(wait))")
    }

    private func counter(_ reason: String) -> MetricCounter {
        if let c = crashCounters[reason] { return c }
        let c = telemetry.counter("ferret.plugin.crashes", dimensions + [("reason", reason)])
        crashCounters[reason] = c
        return c
    }

    private func submit(_ inst: PluginInstance, _ name: String, _ severity: Severity, _ body: String, _ attrs: [Attribute]) {
        _ = inst.context.pipeline.submit([.event(Event(name: name, severity: severity, body: body, timeUnixNano: Clock.unixNanos(),
                                                        attributes: attrs, resource: inst.context.fallback))])
    }

    func release() {
        telemetry.removeObserved(observed)
        restarts.destroy()
        for c in crashCounters.values { c.destroy() }
    }
}
