import Foundation
import Logging

/// How to build one type of aggregator from its configuration entry.
public struct AggregatorType: Sendable {
    /// Keys the entry may carry besides `type` and `name`.
    public let keys: [String]
    /// Keys it cannot do without.
    public let required: [String]
    /// Builds the aggregator. Bad values are reported through the decoder (with
    /// their position) and make it return nil.
    public let make: @Sendable (_ entry: ComponentConfig, _ d: ConfigDecoder, _ context: String, _ logger: Logger) throws -> (any Aggregator)?

    public init(keys: [String], required: [String] = [],
                make: @escaping @Sendable (ComponentConfig, ConfigDecoder, String, Logger) throws -> (any Aggregator)?) {
        self.keys = keys
        self.required = required
        self.make = make
    }
}

/// One configured aggregator, with what identifies its entry across reloads.
public struct AggregatorEntry: Sendable {
    public let name: String
    public let type: String
    public let identity: String
    public let aggregator: any Aggregator
}

/// Builds the aggregator chain (`pipeline.aggregators`, applied in order).
public enum AggregatorRegistry {
    /// Every aggregator type, by the name configs use.
    public static let types: [String: AggregatorType] = [
        "window": WindowAggregator.aggregatorType,
        "rate": RateAggregator.aggregatorType,
        "group": GroupAggregator.aggregatorType,
        "goroutine_leak": GoroutineLeakDetector.aggregatorType,
        "threshold": ThresholdAggregator.aggregatorType,
        "anomaly": AnomalyDetector.aggregatorType,
    ]

    public static let allowedKeys: [String: [String]] = types.mapValues(\.keys)
    public static let requiredKeys: [String: [String]] = types.mapValues(\.required).filter { !$0.value.isEmpty }

    /// Builds each entry once, reporting bad values through `d` (configuration
    /// loading calls this, so `ferret validate` and reloads catch them).
    static func validate(_ configs: [ComponentConfig], _ d: ConfigDecoder) {
        let logger = Logger(label: "ferret.validate")
        for c in configs {
            guard let type = types[c.type], !type.required.contains(where: { c.node[$0] == nil }) else { continue }
            do {
                _ = try type.make(c, d, "in aggregator '\(c.name)'", logger)
            } catch {
                d.fail(c.mark, "aggregator '\(c.name)' (\(c.type)): \(error)")
            }
        }
    }

    /// Builds each entry in order. An entry whose config is unchanged keeps its
    /// aggregator (and its state) from `reuse`. Failing entries are reported
    /// through `errors` and left out; the others work.
    public static func make(_ configs: [ComponentConfig], logger: Logger, reuse: [AggregatorEntry] = [],
                            errors: inout [ConfigError]) -> [AggregatorEntry] {
        var out: [AggregatorEntry] = []
        for c in configs {
            if let same = reuse.first(where: { $0.identity == c.identity && $0.name == c.name }) {
                out.append(same)
                continue
            }
            guard let type = types[c.type] else {
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
