import ArgumentParser
import FerretComponents
import FerretCore
import Foundation
import Logging

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

        let stop = DispatchSemaphore(value: 0)
        let signals = DispatchQueue(label: "ferret.signals")
        var sources: [any DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: signals)
            s.setEventHandler {
                if sig == SIGHUP {
                    logger.info("SIGHUP: reloading \(options.config)")
                    agent.reload()
                } else {
                    stop.signal()
                }
            }
            s.resume()
            sources.append(s)
        }
        agent.start()
        if let d = duration, case .success(let dur) = DurationParser.parse(d) {
            _ = stop.wait(timeout: .now() + .nanoseconds(Int(dur.nanoseconds)))
        } else {
            stop.wait()
        }
        agent.shutdown()
        for s in sources { s.cancel() }
    }
}
