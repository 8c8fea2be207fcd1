import CPluginIsolation
import FerretPluginABI
import Foundation
import Logging
import Synchronization

/// The plugin's functions called in a helper process (isolation: process):
/// each call is a control message; a helper that dies or does not answer
/// within the call timeout is reported to `onCrash` (on the instance's thread,
/// once per helper) and the call fails. `create` starts a fresh helper, so a
/// restart is just create again.
final class HelperCalls: PluginCalls, @unchecked Sendable {
    let launch: HelperLaunch
    let timeout: Duration
    private let logger: Logger
    /// The running helper; changed only on the instance's thread.
    private(set) var helper: HelperProcess? {
        didSet { runningPID.store(helper?.pid ?? 0, ordering: .relaxed) }
    }
    /// Its pid, for other threads (self-metrics, shutdown): 0 when none.
    private let runningPID = Atomic<Int32>(0)
    /// Helpers whose end was handled (or expected: destroy).
    private var taken = Set<pid_t>()
    /// A death found by a call: (death, the call, its pid, whether it was a hang).
    var onCrash: ((HelperDeath, String, Int32, Bool) -> Void)?
    /// A death seen by the reader thread (a push plugin's thread crashed between calls).
    var onAsyncDeath: (@Sendable () -> Void)?

    init(launch: HelperLaunch, timeout: Duration, logger: Logger) {
        self.launch = launch
        self.timeout = timeout
        self.logger = logger
    }

    var isUp: Bool { helper.map { !$0.isDead } ?? false }
    /// Safe from any thread.
    var helperPID: pid_t? { let p = runningPID.load(ordering: .relaxed); return p == 0 ? nil : p }

    /// Takes the current helper's death once it has happened (the reader thread saw it).
    func reap() -> HelperDeath? {
        guard let h = helper, h.isDead else { return nil }
        return take(h, wait: 0)
    }

    private func take(_ h: HelperProcess, wait: Double) -> HelperDeath? {
        guard !taken.contains(h.pid), let d = h.waitForDeath(timeout: wait) else { return nil }
        taken.insert(h.pid)
        if helper === h { helper = nil }
        return d
    }

    private func request(_ w: WireWriter, _ label: String, pid: Int32 = 0) -> (PluginCallResult, ArraySlice<UInt8>) {
        guard let h = helper else { return (.failed("the plugin's helper is not running (restart pending)"), []) }
        switch h.call(w.bytes, timeout: timeout) {
        case .reply(let st, let message, let pointer, let rest):
            return (PluginCallResult(status: st, message: message, jsonPointer: pointer), rest)
        case .timedOut:
            h.kill()
            if let d = take(h, wait: 10) { onCrash?(d, label, pid, true) }
            return (.failed("'\(label)' did not return within \(DurationParser.format(timeout)); its helper (pid \(h.pid)) was killed"), [])
        case .died:
            guard let d = take(h, wait: 10) else { return (.failed("the plugin's helper (pid \(h.pid)) died during '\(label)'"), []) }
            onCrash?(d, label, pid, false)
            var r = CrashReport(d, hang: false)
            if r.call == "none" { r.call = label }
            return (.failed("the plugin crashed in '\(label)': \(r.summary)"), [])
        }
    }

    /// Starts a helper and loads the library in it. The descriptor it reports
    /// is read by the registry; here only success matters.
    func load(context: HostContext) -> PluginCallResult {
        if let old = helper {
            taken.insert(old.pid)
            old.kill()
            _ = old.waitForDeath(timeout: 5)
            helper = nil
        }
        do {
            helper = try HelperProcess.spawn(launch, context: context, logger: logger) { [weak self] _ in self?.onAsyncDeath?() }
        } catch {
            return .failed("\(error)")
        }
        return request(WireWriter(op: Int32(FI_OP_DESCRIBE)), "load").0
    }

    func create(name: String, config: CollectorConfig, context: HostContext) -> PluginCallResult {
        let loaded = load(context: context)
        guard loaded.ok else { return loaded }
        return request(Self.createArgs(Int32(FI_OP_CREATE), name: name, config: config), "create").0
    }

    /// create and validate take the same arguments (ferret_create_args).
    private static func createArgs(_ op: Int32, name: String, config: CollectorConfig) -> WireWriter {
        var w = WireWriter(op: op)
        w.string(name)
        w.string(config.json)
        w.u64(UInt64(config.interval.nanoseconds))
        return w
    }

    func start() -> PluginCallResult { request(WireWriter(op: Int32(FI_OP_START)), "start").0 }

    func attach(_ t: TargetSpec) -> PluginCallResult {
        var w = WireWriter(op: Int32(FI_OP_ATTACH))
        w.u32(UInt32(bitPattern: t.pid))
        w.u32(t.flags)
        w.u64(t.startTicks)
        for s in [t.exe, t.comm, t.group, t.rule, t.goVersion] { w.string(s) }
        return request(w, "attach", pid: t.pid).0
    }

    func detach(_ pid: Int32) -> PluginCallResult {
        guard isUp else { return .success }
        var w = WireWriter(op: Int32(FI_OP_DETACH))
        w.u32(UInt32(bitPattern: pid))
        let r = request(w, "detach", pid: pid).0
        // Its last records still name the pid: delivered before the host forgets it.
        helper?.waitDelivered()
        return r
    }

    func collect(_ now: UInt64) -> PluginCallResult {
        var w = WireWriter(op: Int32(FI_OP_COLLECT))
        w.u64(now)
        return request(w, "collect").0
    }

    func stop() -> PluginCallResult {
        guard isUp else { return .success }
        return request(WireWriter(op: Int32(FI_OP_STOP)), "stop").0
    }

    /// destroy, then the helper exits; everything it emitted is delivered
    /// before this returns (the reader drains the ring to the end).
    func destroy() {
        guard let h = helper else { return }
        taken.insert(h.pid)
        if !h.isDead {
            _ = h.call(WireWriter(op: Int32(FI_OP_DESTROY)).bytes, timeout: timeout)
            if h.waitForDeath(timeout: 5) == nil {
                h.kill()
                _ = h.waitForDeath(timeout: 5)
            }
        }
        helper = nil
    }

    /// Kills the helper at once: from the instance's thread (a failed restart),
    /// waiting for the drain; from another thread (shutdown after a stuck
    /// destroy) only the signal is sent, and the instance's thread, whose call
    /// then fails, does the rest.
    func abandon(fromOtherThread: Bool = false) {
        if fromOtherThread {
            if let pid = helperPID { Glibc.kill(pid, SIGKILL) }
            return
        }
        guard let h = helper else { return }
        taken.insert(h.pid)
        h.kill()
        _ = h.waitForDeath(timeout: 5)
        helper = nil
    }

    /// Asks a one-off helper for the plugin's descriptor, or to validate settings.
    static func describe(launch: HelperLaunch, timeout: Duration, logger: Logger,
                         validate: (name: String, config: CollectorConfig)? = nil) -> (PluginCallResult, HelperDescription?, PluginCallResult?) {
        let context = HostServices.register(instanceName: launch.instanceName, pipeline: describePipeline, fallback: Resource([]),
                                            dimensions: [("ferret.plugin", launch.instanceName)], logger: logger)
        defer { HostServices.unregister(context) }
        let calls = HelperCalls(launch: launch, timeout: timeout, logger: logger)
        defer { calls.destroy() }
        do {
            calls.helper = try HelperProcess.spawn(launch, context: context, logger: logger) { _ in }
        } catch {
            return (.failed("\(error)"), nil, nil)
        }
        let (r, rest) = calls.request(WireWriter(op: Int32(FI_OP_DESCRIBE)), "load")
        guard r.ok else { return (r, nil, nil) }
        var rd = WireReader(rest)
        let desc = HelperDescription(name: rd.string(), version: rd.string(), summary: rd.string(), kind: rd.u32(), flags: rd.u32(),
                                     abiMajor: Int(rd.u32()), abiMinor: Int(rd.u32()), functions: rd.u32())
        guard !rd.failed else { return (.failed("the helper's answer to describe was malformed"), nil, nil) }
        var validated: PluginCallResult?
        if let (name, config) = validate, desc.functions & UInt32(FI_FN_VALIDATE) != 0 {
            validated = calls.request(createArgs(Int32(FI_OP_VALIDATE), name: name, config: config), "validate").0
        }
        return (r, desc, validated)
    }
}

/// Where a one-off helper's emits would go (it emits nothing: the entry
/// function and validate only log). Never started.
private let describePipeline = Pipeline(queueSize: 16, sinks: [], logger: Logger(label: "ferret.describe"))

/// A plugin's descriptor as its helper reported it.
struct HelperDescription: Sendable {
    var name: String
    var version: String
    var summary: String
    var kind: UInt32
    var flags: UInt32
    var abiMajor: Int
    var abiMinor: Int
    var functions: UInt32
}
