import FerretPluginABI
import Foundation
import Logging

/// One plugin instance outside an agent, in the agent's process or in a helper
/// process: what the isolation benchmark drives (bench/Sources/IsolationBench)
/// to compare both paths in one run.
public final class StandaloneInstance {
    let instance: PluginInstance

    public init(library: String, isolation: Isolation, configJSON: String, pipeline: Pipeline, logger: Logger) throws {
        let loaded = isolation == .inProcess ? PluginRegistry.loadLibrary(library)
            : PluginRegistry.describeLibrary(library, manifest: nil, logger: logger)
        let plugin = try loaded.get()
        let plan: IsolationPlan = isolation == .inProcess
            ? .inProcess(plugin.descriptor!)
            : .process(HelperLaunch(library: library, instanceName: "bench/\(plugin.name)", user: nil, capabilities: [],
                                    memoryLimit: nil), RestartPolicy())
        let root = YAMLNode(.mapping([]), mark: SourceMark(file: "<bench>", line: 1, column: 1))
        let config = CollectorConfig(plugin: plugin.name, mark: root.mark, json: configJSON, node: root, interval: .seconds(1),
                                     timeout: .seconds(10))
        instance = PluginInstance(plugin: plugin, rule: "bench", config: config, isolation: plan, pipeline: pipeline,
                                  fallback: Resource([Attribute("ferret.bench", .bool(true))]), logger: logger)
    }

    /// create (and start, for a push plugin).
    public func create() -> PluginCallResult { instance.create() }

    /// Attaches `pid` and waits for the answer; returns it with the seconds it took.
    public func attach(pid: Int32) -> (PluginCallResult, Double) {
        guard let facts = ProcFS().facts(pid: pid) else { return (.failed("no process \(pid)"), 0) }
        let done = DispatchSemaphore(value: 0)
        final class Box: @unchecked Sendable { var r: PluginCallResult? }
        let box = Box()
        let t0 = Clock.monotonicNanos()
        instance.attach(facts, group: "bench", resource: Resource.forProcess(facts, group: "bench", rule: "bench", host: "localhost")) {
            box.r = $0
            done.signal()
        }
        done.wait()
        return (box.r!, Double(Clock.monotonicNanos() - t0) / 1e9)
    }

    public func detach(pid: Int32) { instance.detach(pid: pid) }

    /// One collect, waited for.
    public func collect() {
        instance.tick(nowUnixNano: Clock.unixNanos())
        while instance.isBusy { usleep(200) }
    }

    /// The helper's pid (process isolation).
    public var helperPID: Int32? { (instance.calls as? HelperCalls)?.helperPID }

    public func shutdown() { instance.shutdown() }
}
