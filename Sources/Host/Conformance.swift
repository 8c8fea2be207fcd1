import ArgumentParser
import FerretCore
import Foundation
import Logging

struct Conformance: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a plugin library against the ABI contract (for plugin authors).",
        discussion: "Loads the library, creates an instance, attaches a process, collects (or starts and stops a push collector), detaches and destroys it, and checks everything it emitted. Exit 0 when no check fails.")

    @Argument(help: "Path to the plugin's shared object.")
    var library: String

    @Option(help: "The plugin's configuration as JSON.")
    var config: String = "{}"

    @Option(help: "Attach this pid instead of a child 'sleep' process.")
    var pid: Int32?

    func run() throws {
        bootstrapLogging(.warning)
        let report = FerretCore.Conformance.run(library: library, configJSON: config, pid: pid, logger: Logger(label: "ferret"))
        print(report.text)
        if !report.passed { throw ExitCode(1) }
    }
}
