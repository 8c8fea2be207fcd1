import Foundation
import Logging

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
