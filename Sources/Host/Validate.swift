import ArgumentParser
import FerretComponents
import FerretCore
import Foundation
import Logging

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a configuration; exit 0 if valid, else print file:line:col errors and exit 1.")

    @OptionGroup var options: ConfigOption

    func run() throws {
        do {
            let config = try AgentConfig.load(path: options.config, knownPlugins: { PluginRegistry.pluginNames(in: $0.pluginPaths) },
                                          components: FerretComponents.all)
            for r in PluginRegistry.manifests(in: config.pluginPaths) where r.libraryPath == nil {
                FileHandle.standardError.write(Data("warning: \(r.error ?? "")\n".utf8))
            }
            // Each collector's own settings, checked by its plugin (ABI 1.1
            // validate): a wrong value gets its file:line:col here, not when
            // the agent creates the collector.
            let records = PluginRegistry(logger: Logger(label: "ferret.validate")).load(paths: config.pluginPaths)
            for r in records where r.libraryPath != nil {
                if let e = r.error { FileHandle.standardError.write(Data("warning: plugin '\(r.name)': \(e)\n".utf8)) }
            }
            let (errors, unchecked) = PluginRegistry.validateCollectors(config, records: records)
            if !errors.isEmpty { throw ConfigErrors(errors) }
            for name in unchecked {
                FileHandle.standardError.write(Data("note: plugin '\(name)' has no validate function (ABI 1.0); its settings are checked when the agent creates it\n".utf8))
            }
            let collectors = config.rules.reduce(0) { $0 + $1.collectors.count }
            print("\(options.config): valid (\(config.rules.count) rule(s), \(collectors) collector(s), \(config.pipeline.sinks.count) sink(s))")
        } catch {
            report(error)
            throw ExitCode(1)
        }
    }
}
