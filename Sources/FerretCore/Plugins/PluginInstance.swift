import FerretPluginABI
import Foundation
import Logging
import Synchronization

/// The outcome of one call into a plugin.
public struct PluginCallResult: Sendable {
    public var status: Int32
    public var message: String
    public var jsonPointer: String?
    public var ok: Bool { status == Int32(FERRET_OK.rawValue) }
    public var unsupported: Bool { status == Int32(FERRET_E_UNSUPPORTED.rawValue) }
}

/// One (rule, plugin) instance. All calls into the plugin run on the
/// instance's own thread, one at a time (the ABI's threading contract); the
/// host never waits on it for longer than the call timeout. The plugin runs in
/// the agent (isolation: in_process) or in a helper process (isolation:
/// process), which a supervisor restarts after a crash (PluginSupervisor).
public final class PluginInstance: @unchecked Sendable {
    public let plugin: LoadedPlugin
    public let rule: String
    public let config: CollectorConfig
    public let name: String
    public let isolation: IsolationPlan
    /// Equal identities mean a config reload can keep this instance.
    public let identity: String
    let context: HostContext
    let logger: Logger
    let calls: PluginCalls
    /// Restarts, quarantine and crash events (process isolation only).
    let supervisor: PluginSupervisor?

    private struct Job { var label: String; var body: () -> Void }
    let cond = NSCondition()
    private var jobs: [Job] = []
    private var current: (label: String, since: UInt64)?
    private var timeoutReported = false
    private var closed = false
    var attached = Set<Int32>()
    /// Attaches queued and not yet answered, by pid, with the number of the
    /// request: a detach that arrives meanwhile is queued behind the attach (and
    /// the plugin answers not-found when that attach failed), never dropped.
    private var pendingAttach: [Int32: UInt64] = [:]
    private var attachRequests: UInt64 = 0

    // Its figures, swift-metrics values on the pipeline's telemetry.
    public let collects: MetricCounter
    public let collectErrors: MetricCounter
    public let callErrors: MetricCounter
    public let timeouts: MetricCounter
    public let skipped: MetricCounter
    public let collectDuration: MetricGauge
    public let healthy = Atomic<Bool>(true)
    private var observed: [Int] = []
    let telemetry: SelfTelemetry
    let dimensions: [(String, String)]
    var nextDue: UInt64 = 0

    init(plugin: LoadedPlugin, rule: String, config: CollectorConfig, isolation: IsolationPlan, pipeline: Pipeline,
         fallback: Resource, logger: Logger) {
        self.plugin = plugin
        self.rule = rule
        self.config = config
        self.isolation = isolation
        self.name = "\(rule)/\(plugin.name)"
        self.identity = Self.identity(plugin: plugin, config: config, isolation: isolation)
        self.logger = logger
        let res = Resource(fallback.attributes + [Attribute("ferret.plugin", .string(plugin.name)), Attribute("ferret.rule", .string(rule))])
        let d = [("ferret.plugin", plugin.name), ("ferret.rule", rule)]
        dimensions = d
        let tm = pipeline.telemetry
        telemetry = tm
        collects = tm.counter("ferret.plugin.collect.count", d)
        collectErrors = tm.counter("ferret.plugin.collect.errors", d)
        callErrors = tm.counter("ferret.plugin.call.errors", d)
        timeouts = tm.counter("ferret.plugin.call.timeouts", d)
        skipped = tm.counter("ferret.plugin.collect.skipped", d)
        collectDuration = tm.gauge("ferret.plugin.collect.duration", d)
        context = HostServices.register(instanceName: name, pipeline: pipeline, fallback: res, dimensions: d, logger: logger)
        switch isolation {
        case .inProcess(let descriptor):
            calls = InProcessCalls(descriptor: descriptor)
            supervisor = nil
        case .process(let launch, let policy):
            let helper = HelperCalls(launch: launch, timeout: config.timeout, logger: logger)
            calls = helper
            supervisor = PluginSupervisor(helper: helper, policy: policy, telemetry: tm, dimensions: d)
        }
        observed = [
            tm.observe("ferret.plugin.healthy", d, unit: "1") { [weak self] in self.map { $0.healthy.load(ordering: .relaxed) ? 1 : 0 } },
            tm.observe("ferret.plugin.attached", d, unit: "{process}") { [weak self] in self.map { Double($0.attachedPids.count) } },
        ]
        supervisor?.bind(self)
        let t = Thread { [self] in self.work() }
        t.name = "ferret-\(plugin.name)"
        t.start()
    }

    /// What decides whether a config reload can keep an instance.
    static func identity(plugin: LoadedPlugin, config: CollectorConfig, isolation: IsolationPlan) -> String {
        "\(plugin.libraryPath)|\(config.json)|\(config.interval)|\(config.timeout)|\(isolation.identity)"
    }

    public var timeout: Duration { config.timeout }
    public var attachedPids: Set<Int32> { cond.lock(); defer { cond.unlock() }; return attached }
    public var isProcessIsolated: Bool { supervisor != nil }

    private func work() {
        while true {
            cond.lock()
            while jobs.isEmpty && !closed { cond.wait() }
            if jobs.isEmpty { cond.unlock(); return }
            let job = jobs.removeFirst()
            current = (job.label, Clock.monotonicNanos())
            cond.unlock()
            job.body()
            cond.lock()
            let took = Clock.monotonicNanos() - (current?.since ?? 0)
            if timeoutReported {
                logger.warning("plugin instance '\(name)': '\(job.label)' returned after \(took / 1_000_000) ms")
            }
            if took <= UInt64(config.timeout.nanoseconds) && supervisor?.isDown != true { healthy.store(true, ordering: .relaxed) }
            current = nil
            timeoutReported = false
            cond.unlock()
        }
    }

    @discardableResult
    func enqueue(_ label: String, _ body: @escaping () -> Void) -> Bool {
        cond.lock()
        defer { cond.unlock() }
        if closed { return false }
        jobs.append(Job(label: label, body: body))
        cond.signal()
        return true
    }

    /// True while a call runs or waits.
    public var isBusy: Bool { cond.lock(); defer { cond.unlock() }; return current != nil || !jobs.isEmpty }

    /// Runs `body` on the instance thread and waits up to the timeout (a
    /// helper's own call timeout comes first: it answers or is killed).
    private func callSync(_ label: String, _ body: @escaping () -> PluginCallResult) -> PluginCallResult {
        final class Box: @unchecked Sendable { var r: PluginCallResult? }
        let box = Box()
        let sem = DispatchSemaphore(value: 0)
        let queued = enqueue(label) {
            box.r = body()
            sem.signal()
        }
        guard queued else { return .failed("instance is shut down") }
        let grace: Duration = supervisor == nil ? .zero : .seconds(15)
        if sem.wait(timeout: .now() + .nanoseconds(Int((config.timeout + grace).nanoseconds))) == .timedOut {
            _ = checkTimeout(now: Clock.monotonicNanos() + UInt64(config.timeout.nanoseconds) + 1)
            return .failed("'\(label)' did not return within \(DurationParser.format(config.timeout))")
        }
        return box.r!
    }

    /// Calls create (and start for push collectors).
    func create() -> PluginCallResult {
        let r = callSync("create") { [self] in calls.create(name: name, config: config, context: context) }
        guard r.ok else { return r }
        if plugin.isPush {
            let s = callSync("start") { [self] in calls.start() }
            if !s.ok { return s }
        }
        return r
    }

    /// Attaches a process (asynchronously). `done` runs on the instance thread.
    func attach(_ p: ProcessFacts, group: String, resource: Resource,
                done: @escaping @Sendable (PluginCallResult) -> Void) {
        let spec = TargetSpec(pid: p.pid, flags: (p.isGo ? FERRET_TARGET_GO : 0) | (p.executable?.isStatic == true ? FERRET_TARGET_STATIC : 0),
                              startTicks: p.startTicks, exe: p.exePath, comm: p.comm, group: group, rule: rule, goVersion: p.goVersion ?? "")
        guard plugin.hasAttach else {
            cond.lock(); attached.insert(p.pid); cond.unlock()
            context.setTarget(p.pid, resource)
            supervisor?.want(spec)
            done(.success)
            return
        }
        // The mapping is set inside the job: a detach of the same pid queued
        // earlier (config reload) runs first and must not clear the new one.
        cond.lock()
        attachRequests += 1
        let request = attachRequests
        pendingAttach[p.pid] = request
        cond.unlock()
        let ok = enqueue("attach") { [self] in
            context.setTarget(p.pid, resource)
            supervisor?.want(spec)
            let r = supervisor?.isDown == true ? supervisor!.deferredAttach(spec) : calls.attach(spec)
            cond.lock()
            // Still wanted: no detach (or newer attach) was requested meanwhile.
            let current = pendingAttach[p.pid] == request
            if current { pendingAttach.removeValue(forKey: p.pid) }
            if r.ok && current { attached.insert(p.pid) }
            cond.unlock()
            if !r.ok {
                if current {
                    context.setTarget(p.pid, nil)
                    supervisor?.unwant(p.pid)
                }
                if !r.unsupported { callErrors.increment() }
            }
            done(r)
        }
        if !ok {
            cond.lock()
            if pendingAttach[p.pid] == request { pendingAttach.removeValue(forKey: p.pid) }
            cond.unlock()
            done(.failed("instance is shut down"))
        }
    }

    /// Detaches a process (asynchronously).
    func detach(pid: Int32) {
        cond.lock()
        // Attached, or an attach is queued or running: the detach goes behind it.
        let was = attached.remove(pid) != nil || pendingAttach.removeValue(forKey: pid) != nil
        cond.unlock()
        guard was else { context.setTarget(pid, nil); return }
        let ok = enqueue("detach") { [self] in
            supervisor?.unwant(pid)
            if plugin.hasDetach {
                let r = calls.detach(pid)
                if !r.ok && r.status != Int32(FERRET_E_NOT_FOUND.rawValue) {
                    callErrors.increment()
                    logger.warning("plugin instance '\(name)': detach(\(pid)) failed: \(r.message)")
                }
            }
            context.setTarget(pid, nil)
        }
        if !ok { context.setTarget(pid, nil) }
    }

    /// Schedules a collect unless the previous call is still running (or the
    /// helper is down, waiting for its restart).
    func tick(nowUnixNano: UInt64) {
        guard plugin.isPull, plugin.hasCollect else { return }
        if isBusy || supervisor?.isDown == true {
            skipped.increment()
            return
        }
        _ = enqueue("collect") { [self] in
            let start = Clock.monotonicNanos()
            let r = calls.collect(nowUnixNano)
            collectDuration.set(Double(Clock.monotonicNanos() - start) / 1e9)
            collects.increment()
            if !r.ok {
                let n = collectErrors.increment()
                if n == 1 || n % 100 == 0 {
                    logger.warning("plugin instance '\(name)': collect failed (\(n) so far): \(r.message)")
                }
            }
        }
    }

    /// Reports a call that has run past the timeout, once per call.
    /// Returns the label of the call when it newly timed out. (A helper's calls
    /// time out on their own: the helper is killed and restarted.)
    func checkTimeout(now: UInt64) -> String? {
        if supervisor != nil { return nil }
        cond.lock()
        defer { cond.unlock() }
        // `now` is read by the caller before taking the lock, so a call that started
        // in between has `since` > `now` (an unsigned underflow trapped here).
        guard let cur = current, !timeoutReported, now > cur.since,
              now - cur.since > UInt64(config.timeout.nanoseconds) else { return nil }
        timeoutReported = true
        timeouts.increment()
        healthy.store(false, ordering: .relaxed)
        logger.error("plugin instance '\(name)': '\(cur.label)' has run longer than its \(DurationParser.format(config.timeout)) timeout; instance marked unhealthy (no further calls until it returns)")
        return cur.label
    }

    /// Restarts a crashed helper when its backoff is over (scheduler loop).
    func maintain(now: UInt64) {
        guard let s = supervisor, s.restartDue(now: now), !isBusy else { return }
        s.restartQueued()
        enqueue("restart") { s.restart() }
    }

    /// stop (push) and destroy, then unregister the context. Waits up to the timeout.
    func shutdown() {
        let sem = DispatchSemaphore(value: 0)
        let queued = enqueue("destroy") { [self] in
            if plugin.isPush && supervisor?.isDown != true {
                let r = calls.stop()
                if !r.ok { logger.warning("plugin instance '\(name)': stop failed: \(r.message)") }
            }
            calls.destroy()
            sem.signal()
        }
        cond.lock(); closed = true; cond.signal(); cond.unlock()
        let grace: Duration = supervisor == nil ? .zero : .seconds(10)
        if queued && sem.wait(timeout: .now() + .nanoseconds(Int((config.timeout + grace).nanoseconds))) == .timedOut {
            logger.error("plugin instance '\(name)': stop/destroy did not return within \(DurationParser.format(config.timeout)); abandoning it")
            (calls as? HelperCalls)?.abandon(fromOtherThread: true)
        }
        HostServices.unregister(context)
        telemetry.removeObserved(observed)
        supervisor?.release()
        for c in [collects, collectErrors, callErrors, timeouts, skipped, context.emitted, context.dropped, context.invalid] { c.destroy() }
        collectDuration.destroy()
    }
}

func ferretMessage(_ buf: inout ferret_msg_buf, _ text: String) {
    guard let data = buf.data, buf.cap > 0 else { return }
    let bytes = Array(text.utf8.prefix(buf.cap - 1))
    bytes.withUnsafeBufferPointer { p in
        UnsafeMutableRawPointer(data).copyMemory(from: p.baseAddress!, byteCount: bytes.count)
    }
    data[bytes.count] = 0
    buf.len = bytes.count
}
