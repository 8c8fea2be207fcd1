import Foundation
import Logging
import Synchronization

/// The running agent: config, plugins, discovery, scheduling and the
/// pipeline. State changes happen on one serial control queue; plugin calls
/// happen on each instance's own thread; signals flow through the pipeline.
public final class Agent: @unchecked Sendable {
    public let configPath: String
    let logger: Logger
    let procfs: ProcFS
    let control = DispatchQueue(label: "ferret.control")
    let registry: PluginRegistry
    /// The sink and aggregator types this agent was built with.
    public let components: Components
    public private(set) var config: AgentConfig
    var pipeline: Pipeline!
    /// The configured aggregator chain (kept across reloads when an entry is unchanged).
    var aggregators: [AggregatorEntry] = []
    var matcher: RuleMatcher
    var records: [PluginRecord] = []
    var instances: [String: PluginInstance] = [:]        // key: "rule/plugin"
    var tracked: [Int32: TrackedProcess] = [:]
    let hostname: String
    let agentResource: Resource
    var watcher: ProcessEventWatcher?
    let stopping = Atomic<Bool>(false)
    /// Wakes the loops' timed waits when the agent stops.
    private let stopWake = NSCondition()
    /// The agent's own figures, on the process's telemetry (SelfTelemetry.shared).
    let telemetry = SelfTelemetry.shared
    let reloads = SelfTelemetry.shared.counter("ferret.config.reloads")
    let reloadFailures = SelfTelemetry.shared.counter("ferret.config.reload_failures")
    let attachLatency = SelfTelemetry.shared.timer("ferret.discovery.attach.latency")
    let containerNames: ContainerNameResolver
    private var threads: [DispatchSemaphore] = []

    struct TrackedProcess {
        var facts: ProcessFacts
        var rule: String?
        var group: String?
        var resource: Resource?
        var instances: [String] = []
    }

    /// Loads and validates the configuration; nothing runs yet. `host_proc` takes
    /// effect here, before anything (the plugins included) reads procfs; `procfs`
    /// defaults to a reader of that root.
    public init(configPath: String, components: Components, logger: Logger, procfs: ProcFS? = nil) throws {
        self.configPath = configPath
        self.components = components
        self.logger = logger
        self.registry = PluginRegistry(logger: logger)
        config = try AgentConfig.load(path: configPath, knownPlugins: { PluginRegistry.pluginNames(in: $0.pluginPaths) },
                                     components: components)
        if let root = config.agent.hostProc, !HostProc.configure(root) {
            throw AgentStartError("\(configPath): 'host_proc' \(root) cannot take effect: this process already reads procfs at \(HostProc.path) (set \(HostProc.environmentVariable) before starting)")
        }
        self.procfs = procfs ?? ProcFS()
        containerNames = ContainerNameResolver(hostRoot: config.agent.hostRoot)
        hostname = config.agent.hostname.flatMap { $0.isEmpty ? nil : $0 } ?? ProcessInfo.processInfo.hostName
        agentResource = Resource.agent(host: hostname)
        matcher = RuleMatcher(rules: config.rules)
        HostServices.agentLogger = logger
    }

    // MARK: - lifecycle

    /// Starts everything. Plugin and sink problems are logged and skipped.
    public func start() {
        var errors: [ConfigError] = []
        SelfTelemetry.bootstrap()
        let runners = components.makeSinkRunners(config.pipeline.sinks, logger: logger, telemetry: telemetry, errors: &errors)
        aggregators = components.makeAggregators(config.pipeline.aggregators, logger: logger, errors: &errors)
        for e in errors { logger.error("\(e)") }
        pipeline = Pipeline(queueSize: config.pipeline.queueSize, aggregators: aggregators.map(\.aggregator),
                            sinks: runners, logger: logger, telemetry: telemetry)
        observeProcesses()
        pipeline.start()
        control.sync {
            loadPlugins()
            applyInstances()
            rescan(initial: true)
        }
        do {
            let w = try ProcessEventWatcher()
            w.start { [weak self] changes in
                guard let agent = self else { return }
                // On the netlink thread itself: handing each batch to a worker cost
                // a thread wakeup per exec (half the agent's CPU under exec storms).
                agent.control.sync { agent.handle(changes) }
            }
            watcher = w
        } catch {
            logger.warning("\(error); new processes are found by the /proc rescan every \(DurationParser.format(config.agent.rescan)) only")
        }
        startLoop(name: "ferret-scheduler") { [self] in schedulerLoop() }
        startLoop(name: "ferret-housekeeping") { [self] in housekeepingLoop() }
        logger.info("ferret started: \(config.rules.count) rule(s), \(instances.count) collector instance(s), \(pipeline.sinks.count) sink(s), \(tracked.values.filter { $0.rule != nil }.count) matched process(es)")
    }

    private func startLoop(name: String, _ body: @escaping @Sendable () -> Void) {
        let done = DispatchSemaphore(value: 0)
        threads.append(done)
        let t = Thread {
            body()
            done.signal()
        }
        t.name = name
        t.start()
    }

    /// Stops collectors, flushes sinks. Safe to call once.
    public func shutdown() {
        guard !stopping.exchange(true, ordering: .relaxed) else { return }
        stopWake.lock()
        stopWake.broadcast()
        stopWake.unlock()
        logger.info("ferret stopping")
        watcher?.stop()
        for t in threads { _ = t.wait(timeout: .now() + 3) }
        control.sync {
            let all = Array(instances.values)
            instances.removeAll()
            for i in all { i.shutdown() }
        }
        emitSelfMetrics()
        pipeline.shutdown(timeout: 10)
    }

    /// Re-reads the configuration. An invalid one is reported and the old
    /// one stays in force. Returns true when the new config was applied.
    @discardableResult
    public func reload() -> Bool {
        let newConfig: AgentConfig
        do {
            newConfig = try AgentConfig.load(path: configPath, knownPlugins: { PluginRegistry.pluginNames(in: $0.pluginPaths) },
                                     components: components)
        } catch {
            reloadFailures.increment()
            logger.error("reload: the new configuration is invalid; keeping the old one:\n\(error)")
            submitEvent("ferret.reload.failed", .error, "configuration \(configPath) is invalid; the old configuration stays in force: \(error)")
            return false
        }
        // The collectors' own settings, checked by their plugins before anything
        // changes: a wrong one keeps the old configuration, as a YAML error does.
        let (pluginErrors, _) = PluginRegistry.validateCollectors(newConfig, records: registry.load(paths: newConfig.pluginPaths))
        if !pluginErrors.isEmpty {
            let error = ConfigErrors(pluginErrors)
            reloadFailures.increment()
            logger.error("reload: the new configuration is invalid; keeping the old one:\n\(error)")
            submitEvent("ferret.reload.failed", .error, "configuration \(configPath) is invalid; the old configuration stays in force: \(error)")
            return false
        }
        if (newConfig.agent.hostProc ?? "/proc") != (config.agent.hostProc ?? "/proc") {
            logger.warning("reload: 'host_proc' changed to \(newConfig.agent.hostProc ?? "/proc"); procfs stays at \(HostProc.path) until the agent restarts")
        }
        control.sync {
            config = newConfig
            matcher = RuleMatcher(rules: newConfig.rules)
            var errors: [ConfigError] = []
            let runners = components.makeSinkRunners(newConfig.pipeline.sinks, logger: logger, reuse: pipeline.sinks,
                                                     telemetry: telemetry, errors: &errors)
            aggregators = components.makeAggregators(newConfig.pipeline.aggregators, logger: logger, reuse: aggregators, errors: &errors)
            for e in errors { logger.error("\(e)") }
            pipeline.replaceAggregators(aggregators.map(\.aggregator))
            pipeline.replaceSinks(runners)
            loadPlugins()
            applyInstances()
            // Re-match every known process under the new rules.
            for pid in Array(tracked.keys) {
                guard let t = tracked[pid] else { continue }
                release(pid, exited: false, exitCode: nil)
                consider(t.facts, kernelNanos: nil)
            }
        }
        reloads.increment()
        logger.info("reload: applied \(configPath): \(newConfig.rules.count) rule(s), \(instances.count) collector instance(s), \(pipeline.sinks.count) sink(s)")
        submitEvent("ferret.reload", .info, "configuration \(configPath) applied")
        return true
    }

    // MARK: - plugins and instances (control queue)

    private func loadPlugins() {
        records = registry.load(paths: config.pluginPaths)
        for r in records {
            if let e = r.error {
                logger.error("plugin \(r.name.isEmpty ? r.manifestPath : "'\(r.name)'"): \(e)")
            }
        }
    }

    /// Creates, keeps or destroys instances to match the rules.
    private func applyInstances() {
        var wanted: [String: (RuleConfig, CollectorConfig)] = [:]
        for rule in config.rules {
            for c in rule.collectors { wanted["\(rule.name)/\(c.plugin)"] = (rule, c) }
        }
        for (key, inst) in instances {
            // Kept when nothing about it changed; a quarantined one gets another chance.
            if let (_, c) = wanted[key], let rec = records.first(where: { $0.name == c.plugin }),
               case .success(let (p, plan)) = PluginRegistry.plan(for: rec, collector: c, instanceName: key),
               inst.identity == PluginInstance.identity(plugin: p, config: c, isolation: plan), inst.supervisor?.isQuarantined != true {
                continue
            }
            for pid in inst.attachedPids { tracked[pid]?.instances.removeAll { $0 == key } }
            instances.removeValue(forKey: key)
            inst.shutdown()
        }
        for (key, (rule, c)) in wanted.sorted(by: { $0.key < $1.key }) where instances[key] == nil {
            guard let rec = records.first(where: { $0.name == c.plugin }) else { continue }
            let plugin: LoadedPlugin
            let plan: IsolationPlan
            switch PluginRegistry.plan(for: rec, collector: c, instanceName: key) {
            case .success(let (p, pl)): (plugin, plan) = (p, pl)
            case .failure(let e):
                logger.error("\(c.mark): collector '\(c.plugin)' of rule '\(rule.name)' is not available: \(e.description)")
                continue
            }
            let inst = PluginInstance(plugin: plugin, rule: rule.name, config: c, isolation: plan, pipeline: pipeline,
                                      fallback: agentResource, logger: logger)
            let r = inst.create()
            if !r.ok {
                let mark = r.jsonPointer.flatMap { c.node.keyMark(atJSONPointer: $0) } ?? c.mark
                if inst.isProcessIsolated && inst.supervisor?.isDown == true {
                    // It crashed in create: the supervisor restarts it (or quarantines it).
                    logger.error("\(mark): plugin '\(c.plugin)' (\(plugin.libraryPath)) crashed in create in rule '\(rule.name)': \(r.message)")
                    inst.nextDue = Clock.monotonicNanos()
                    instances[key] = inst
                    continue
                }
                logger.error("\(mark): plugin '\(c.plugin)' (\(plugin.libraryPath)) refused its configuration in rule '\(rule.name)': \(r.message.isEmpty ? "create failed with status \(r.status)" : r.message)")
                submitEvent("ferret.plugin.create_failed", .error, "\(mark): plugin '\(c.plugin)' in rule '\(rule.name)': \(r.message)")
                inst.shutdown()
                continue
            }
            inst.nextDue = Clock.monotonicNanos()
            instances[key] = inst
        }
    }

    // MARK: - loops

    /// A timed wait that ends early when the agent stops. Returns false then.
    private func pause(nanos: UInt64) -> Bool {
        stopWake.lock()
        defer { stopWake.unlock() }
        if stopping.load(ordering: .relaxed) { return false }
        if nanos > 0 { _ = stopWake.wait(until: Date(timeIntervalSinceNow: Double(nanos) / 1e9)) }
        return !stopping.load(ordering: .relaxed)
    }

    private func schedulerLoop() {
        while !stopping.load(ordering: .relaxed) {
            let list = control.sync { Array(instances.values) }
            let now = Clock.monotonicNanos()
            var next = now + 50_000_000
            for inst in list {
                inst.maintain(now: now)
                if let label = inst.checkTimeout(now: now) {
                    submitEvent("ferret.plugin.timeout", .error, "plugin instance '\(inst.name)': '\(label)' exceeded its \(DurationParser.format(inst.timeout)) timeout; marked unhealthy")
                }
                guard inst.plugin.isPull else { continue }
                let interval = UInt64(inst.config.interval.nanoseconds)
                if now >= inst.nextDue {
                    inst.tick(nowUnixNano: Clock.unixNanos())
                    inst.nextDue += interval
                    if inst.nextDue <= now { inst.nextDue = now + interval }
                }
                next = min(next, inst.nextDue)
            }
            // At most 50 ms: an instance created meanwhile is due at once.
            if !pause(nanos: min(next > now ? next - now : 0, 50_000_000)) { return }
        }
    }

    private func housekeepingLoop() {
        var lastRescan = Clock.monotonicNanos()
        var lastSelf = Clock.monotonicNanos()
        while !stopping.load(ordering: .relaxed) {
            let (rescanEvery, selfEvery) = control.sync {
                (UInt64(config.agent.rescan.nanoseconds), UInt64(config.agent.selfMetricsInterval.nanoseconds))
            }
            // Until the next rescan or self-metrics, and at least once a second
            // (a reload may shorten either interval).
            let due = min(lastRescan &+ rescanEvery, lastSelf &+ selfEvery)
            let before = Clock.monotonicNanos()
            if !pause(nanos: min(due > before ? due - before : 0, 1_000_000_000)) { return }
            let now = Clock.monotonicNanos()
            if now - lastRescan >= rescanEvery {
                lastRescan = now
                control.sync { rescan() }
            }
            if now - lastSelf >= selfEvery {
                lastSelf = now
                emitSelfMetrics()
            }
        }
    }
}

/// Why the agent could not be set up from a valid configuration.
public struct AgentStartError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
