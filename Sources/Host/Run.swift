import ArgumentParser
import FerretComponents
import FerretCore
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the agent: discover processes, attach collectors, send signals to the sinks.",
        discussion: "SIGHUP re-reads the configuration (an invalid one is reported and the old one kept); SIGINT or SIGTERM stop collectors, flush sinks and exit 0.")

    @OptionGroup var options: ConfigOption

    @Option(help: "Stop after this long (e.g. 30s, 5m). Default: run until SIGINT/SIGTERM.")
    var duration: String?

    @Option(help: "Override the log level (trace, debug, info, notice, warning, error).")
    var logLevel: String?

    func validate() throws {
        if let d = duration, case .failure(let e) = DurationParser.parse(d) {
            throw ValidationError("--duration '\(d)': \(e)")
        }
        if let l = logLevel, Logger.Level(rawValue: l) == nil {
            throw ValidationError("--log-level '\(l)' is not one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func run() throws {
        bootstrapLogging(.info)
        let logger = Logger(label: "ferret")
        let agent: Agent
        do {
            agent = try Agent(configPath: options.config, components: FerretComponents.all, logger: logger)
        } catch {
            report(error)
            throw ExitCode(1)
        }
        LogLevelSetting.level.withLock { $0 = Logger.Level(rawValue: logLevel ?? agent.config.agent.logLevel) ?? .info }

        // One lifecycle: the agent is a Service in a ServiceGroup, which owns
        // SIGTERM and SIGINT (graceful shutdown: stop collectors, flush sinks).
        // SIGHUP re-reads the configuration.
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: AgentService(agent: agent))],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        let finished = DispatchSemaphore(value: 0)
        let config = options.config
        let limit = duration.flatMap { d -> Duration? in if case .success(let v) = DurationParser.parse(d) { v } else { nil } }
        Task {
            await withTaskGroup(of: Void.self) { tasks in
                tasks.addTask {
                    for await _ in await UnixSignalsSequence(trapping: .sighup) {
                        logger.info("SIGHUP: reloading \(config)")
                        await AgentService.onThread("ferret-reload") { agent.reload() }
                    }
                }
                if let limit {
                    tasks.addTask {
                        try? await Task.sleep(for: limit)
                        await group.triggerGracefulShutdown()
                    }
                }
                do { try await group.run() } catch { logger.error("ferret: \(error)") }
                tasks.cancelAll()
            }
            finished.signal()
        }
        finished.wait()
    }
}

/// The agent as a Service: it starts, runs until the group shuts down
/// gracefully, then stops its collectors and flushes its sinks.
struct AgentService: Service {
    let agent: Agent

    func run() async throws {
        await Self.onThread("ferret-start") { agent.start() }
        try? await gracefulShutdown()
        await Self.onThread("ferret-shutdown") { agent.shutdown() }
    }

    /// Runs blocking agent work (starting sinks binds sockets and waits for
    /// their servers' tasks) on a thread of its own, never on the concurrency
    /// pool those tasks need.
    static func onThread(_ name: String, _ body: @escaping @Sendable () -> Void) async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let t = Thread {
                body()
                done.resume()
            }
            t.name = name
            t.start()
        }
    }
}
