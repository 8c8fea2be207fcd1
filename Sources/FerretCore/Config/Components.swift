import Foundation
import Logging

/// One configured aggregator, with what identifies its entry across reloads.
public struct AggregatorEntry: Sendable {
    public let name: String
    public let type: String
    public let identity: String
    public let aggregator: any Aggregator
    /// Its decoded Config: what a reload compares.
    public let config: any Sendable

    public init(name: String, type: String, identity: String, aggregator: any Aggregator, config: any Sendable) {
        self.name = name
        self.type = type
        self.identity = identity
        self.aggregator = aggregator
        self.config = config
    }
}

/// The pipeline component types an agent is built with, by the names configs
/// use. The kernel knows none of them: the host assembles the table
/// (`FerretComponents.all`, like Telegraf's `plugins/outputs/all`) and hands
/// it to configuration loading and to the agent.
public struct Components: Sendable {
    public var sinks: [String: SinkType]
    public var aggregators: [String: AggregatorType]

    public init(sinks: [String: SinkType], aggregators: [String: AggregatorType]) {
        self.sinks = sinks
        self.aggregators = aggregators
    }

    /// No components: configs may name none (tests of the kernel alone).
    public static let none = Components(sinks: [:], aggregators: [:])

    public static let defaultBuffer = 65_536

    /// Allowed keys per sink type (besides `type` and `name`); `buffer` is the runner's.
    public var sinkKeys: [String: [String]] { sinks.mapValues { Array(Set($0.keys + ["buffer"])).sorted() } }
    public var aggregatorKeys: [String: [String]] { aggregators.mapValues(\.keys) }

    /// Creates and starts a runner for each sink entry. An entry whose decoded
    /// Config (and buffer) equals a running sink's keeps that runner. Entries
    /// that fail are reported through `errors` (with their position) and
    /// skipped; the others work.
    public func makeSinkRunners(_ configs: [ComponentConfig], logger: Logger, reuse: [SinkRunner] = [],
                                telemetry: SelfTelemetry = SelfTelemetry(), errors: inout [ConfigError]) -> [SinkRunner] {
        var out: [SinkRunner] = []
        for c in configs {
            guard let type = sinks[c.type] else {
                errors.append(ConfigError(mark: c.mark, "unknown sink type '\(c.type)'"))
                continue
            }
            if let missing = type.required.first(where: { c.node[$0] == nil }) {
                errors.append(ConfigError(mark: c.mark, "sink '\(c.name)' (\(c.type)) needs '\(missing)'"))
                continue
            }
            let d = ConfigDecoder()
            let ctx = "in sink '\(c.name)'"
            var buffer = Self.defaultBuffer
            if let b = c.node["buffer"] { buffer = d.int(b, "'buffer'", context: ctx, range: 16...16_777_216) ?? buffer }
            guard let decoded = type.decode(c, d, context: ctx), d.errors.isEmpty else {
                errors.append(contentsOf: d.errors)
                continue
            }
            if let same = reuse.first(where: { $0.name == c.name && $0.type == c.type && $0.buffer == buffer && $0.config.map(decoded.isSame) == true }) {
                out.append(same)
                continue
            }
            do {
                let sink = try decoded.build(logger: logger)
                do {
                    try sink.start()
                } catch {
                    sink.close()
                    throw error
                }
                out.append(SinkRunner(name: c.name, type: c.type, identity: c.identity, sink: sink, buffer: buffer, logger: logger,
                                      telemetry: telemetry, config: decoded.config))
            } catch let e as ConfigError {
                errors.append(e)
            } catch {
                errors.append(ConfigError(mark: c.mark, "sink '\(c.name)' (\(c.type)): \(error)"))
            }
        }
        return out
    }

    /// Builds each entry in order. An entry whose decoded Config is unchanged
    /// keeps its aggregator (and its state) from `reuse`. Failing entries are
    /// reported through `errors` and left out; the others work.
    public func makeAggregators(_ configs: [ComponentConfig], logger: Logger, reuse: [AggregatorEntry] = [],
                                errors: inout [ConfigError]) -> [AggregatorEntry] {
        var out: [AggregatorEntry] = []
        for c in configs {
            guard let type = aggregators[c.type] else {
                errors.append(ConfigError(mark: c.mark, "unknown aggregator type '\(c.type)'"))
                continue
            }
            if let missing = type.required.first(where: { c.node[$0] == nil }) {
                errors.append(ConfigError(mark: c.mark, "aggregator '\(c.name)' (\(c.type)) needs '\(missing)'"))
                continue
            }
            let d = ConfigDecoder()
            guard let decoded = type.decode(c, d, context: "in aggregator '\(c.name)'"), d.errors.isEmpty else {
                errors.append(contentsOf: d.errors)
                continue
            }
            if let same = reuse.first(where: { $0.name == c.name && $0.type == c.type && decoded.isSame(as: $0.config) }) {
                out.append(same)
                continue
            }
            do {
                out.append(AggregatorEntry(name: c.name, type: c.type, identity: c.identity, aggregator: try decoded.build(logger: logger),
                                           config: decoded.config))
            } catch let e as ConfigError {
                errors.append(e)
            } catch {
                errors.append(ConfigError(mark: c.mark, "aggregator '\(c.name)' (\(c.type)): \(error)"))
            }
        }
        return out
    }
}
