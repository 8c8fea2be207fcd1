import Foundation
import Logging

/// One configured aggregator, with what identifies its entry across reloads.
public struct AggregatorEntry: Sendable {
    public let name: String
    public let type: String
    public let identity: String
    public let aggregator: any Aggregator
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

    /// Creates a runner for each sink entry. Entries that fail are reported
    /// through `errors` (with their position) and skipped; the others work.
    public func makeSinkRunners(_ configs: [ComponentConfig], logger: Logger, reuse: [SinkRunner] = [],
                                telemetry: SelfTelemetry = SelfTelemetry(), errors: inout [ConfigError]) -> [SinkRunner] {
        var out: [SinkRunner] = []
        for c in configs {
            if let same = reuse.first(where: { $0.identity == c.identity && $0.name == c.name }) {
                out.append(same)
                continue
            }
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
            var sink: (any Sink)?
            do {
                sink = try type.make(c, d, ctx, logger)
            } catch {
                errors.append(ConfigError(mark: c.mark, "sink '\(c.name)' (\(c.type)): \(error)"))
            }
            errors.append(contentsOf: d.errors)
            if d.errors.isEmpty, let sink {
                out.append(SinkRunner(name: c.name, type: c.type, identity: c.identity, sink: sink, buffer: buffer, logger: logger,
                                      telemetry: telemetry))
            } else if let sink {
                sink.close()
            }
        }
        return out
    }

    /// Builds each entry in order. An entry whose config is unchanged keeps its
    /// aggregator (and its state) from `reuse`. Failing entries are reported
    /// through `errors` and left out; the others work.
    public func makeAggregators(_ configs: [ComponentConfig], logger: Logger, reuse: [AggregatorEntry] = [],
                                errors: inout [ConfigError]) -> [AggregatorEntry] {
        var out: [AggregatorEntry] = []
        for c in configs {
            if let same = reuse.first(where: { $0.identity == c.identity && $0.name == c.name }) {
                out.append(same)
                continue
            }
            guard let type = aggregators[c.type] else {
                errors.append(ConfigError(mark: c.mark, "unknown aggregator type '\(c.type)'"))
                continue
            }
            if let missing = type.required.first(where: { c.node[$0] == nil }) {
                errors.append(ConfigError(mark: c.mark, "aggregator '\(c.name)' (\(c.type)) needs '\(missing)'"))
                continue
            }
            let d = ConfigDecoder()
            do {
                if let a = try type.make(c, d, "in aggregator '\(c.name)'", logger), d.errors.isEmpty {
                    out.append(AggregatorEntry(name: c.name, type: c.type, identity: c.identity, aggregator: a))
                }
            } catch {
                errors.append(ConfigError(mark: c.mark, "aggregator '\(c.name)' (\(c.type)): \(error)"))
            }
            errors.append(contentsOf: d.errors)
        }
        return out
    }
}
