import FerretPluginABI
import Foundation
import Logging

extension LoadedPlugin {
    /// True when the plugin can check a configuration without making an
    /// instance (ABI 1.1 `validate`).
    public var canValidate: Bool { hasValidate }

    /// Asks the plugin to check `config` (ABI 1.1 `validate`: it decodes and
    /// checks the values and starts nothing), in the agent or in a one-off
    /// helper as `plan` says. nil when the plugin has no `validate` (a 1.0
    /// plugin checks its configuration only in create). Runs on the calling thread.
    func validate(_ config: CollectorConfig, instanceName: String, plan: IsolationPlan, logger: Logger) -> PluginCallResult? {
        guard hasValidate else { return nil }
        switch plan {
        case .process(let launch, _):
            let (r, _, v) = HelperCalls.describe(launch: launch, timeout: config.timeout, logger: logger, validate: (instanceName, config))
            return r.ok ? v : r
        case .inProcess(let descriptor):
            guard let fn = descriptor.pointee.validate else { return nil }
            let msg = MessageBuffer()
            let st = withCreateArgs(name: instanceName, config: config, host: nil) { fn(&$0, &msg.buf) }
            return PluginCallResult(status: st, message: msg.message, jsonPointer: msg.jsonPointer)
        }
    }
}

extension PluginRegistry {
    /// Checks every collector's settings with its plugin (`validate`), before
    /// anything is created. A refusal becomes a ConfigError at the key the
    /// plugin named (its JSON pointer mapped to the YAML file:line:col), or at
    /// the collector. Plugins that are not loaded are left to the loader's
    /// own errors. Returns the errors and the plugins that cannot check.
    public static func validateCollectors(_ config: AgentConfig, records: [PluginRecord],
                                          logger: Logger = Logger(label: "ferret.validate")) -> (errors: [ConfigError], unchecked: [String]) {
        var errors: [ConfigError] = []
        var unchecked = Set<String>()
        for rule in config.rules {
            for c in rule.collectors {
                guard let rec = records.first(where: { $0.name == c.plugin }), rec.plugin != nil else { continue }
                let name = "\(rule.name)/\(c.plugin)"
                guard case .success(let (plugin, plan)) = plan(for: rec, collector: c, instanceName: name) else { continue }
                guard let r = plugin.validate(c, instanceName: name, plan: plan, logger: logger) else {
                    unchecked.insert(c.plugin)
                    continue
                }
                if r.ok { continue }
                let mark = r.jsonPointer.flatMap { c.node.keyMark(atJSONPointer: $0) } ?? c.mark
                let why = r.message.isEmpty ? "validate failed with status \(r.status)" : r.message
                errors.append(ConfigError(mark: mark, "plugin '\(c.plugin)' (\(plugin.libraryPath)) refuses its settings in rule '\(rule.name)': \(why)"))
            }
        }
        return (errors, unchecked.sorted())
    }
}
