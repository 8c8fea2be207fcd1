import ArgumentParser
import FerretComponents
import FerretCore
import Foundation

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
            let collectors = config.rules.reduce(0) { $0 + $1.collectors.count }
            print("\(options.config): valid (\(config.rules.count) rule(s), \(collectors) collector(s), \(config.pipeline.sinks.count) sink(s))")
        } catch {
            report(error)
            throw ExitCode(1)
        }
    }
}
