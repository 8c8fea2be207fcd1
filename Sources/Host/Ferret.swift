import ArgumentParser
import FerretCore
import Foundation
import Logging

@main
struct Ferret: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ferret",
        abstract: "Observe Go services from outside: scheduler, heap, CPU and HTTP, with zero code changes.",
        version: FerretVersion.string,
        subcommands: [Run.self, Validate.self, PS.self, Plugins.self, Inspect.self, Goroutines.self, ProfileCommand.self, Status.self, Conformance.self, PluginHostCommand.self],
        defaultSubcommand: Run.self)
}

enum FerretVersion {
    static let string = "\(FerretCore.ferretVersion) (plugin ABI \(FerretCore.abiVersion))"
}

/// Options shared by the subcommands that read a configuration.
struct ConfigOption: ParsableArguments {
    @Option(name: [.short, .long], help: "The configuration file.")
    var config: String = "config.yaml"
}

/// Prints configuration errors, one per line, to stderr.
func report(_ error: any Error) {
    if let e = error as? ConfigErrors {
        for c in e.errors { FileHandle.standardError.write(Data("\(c)\n".utf8)) }
    } else {
        FileHandle.standardError.write(Data("\(error)\n".utf8))
    }
}

func bootstrapLogging(_ level: Logger.Level) {
    LogLevelSetting.level.withLock { $0 = level }
    LoggingSystem.bootstrap { label in AgentLogHandler(label: label) }
}
