import ArgumentParser
import FerretCore
import Foundation

/// `ferret plugin-host`: the helper that runs one plugin instance in its own
/// process (isolation: process). The agent starts it with its descriptors set
/// up; this command execs the same program (`ferret-plugin-host`, next to
/// `ferret`), so it can be found and inspected from the one CLI.
struct PluginHostCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugin-host",
        abstract: "The plugin helper process (started by the agent for isolation: process; not run by hand).",
        discussion: "Execs ferret-plugin-host, a small C program next to ferret (scripts/build.sh builds it): it loads the plugin's .so unchanged, drops privileges, and serves the agent's control calls; the plugin's emits go to a shared-memory ring. See docs/isolation.md.")

    @Argument(parsing: .captureForPassthrough, help: "Arguments for ferret-plugin-host.")
    var arguments: [String] = []

    func run() throws {
        let exe = PluginRegistry.pluginHostExecutable
        let argv = [exe] + arguments
        let c = argv.map { strdup($0) } + [nil]
        execv(exe, c)
        FileHandle.standardError.write(Data("ferret plugin-host: cannot run \(exe): \(String(cString: strerror(errno))) (scripts/build.sh builds it)\n".utf8))
        throw ExitCode(127)
    }
}
