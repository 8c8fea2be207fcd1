import Foundation
import Logging

/// Builds sinks from their configuration entries.
public enum SinkRegistry {
    /// Every sink type, by the name configs use.
    public static let types: [String: SinkType] = [
        "console": ConsoleSink.sinkType,
        "jsonl": JSONLSink.sinkType,
        "pprof_dir": PprofDirSink.sinkType,
        "influxdb": InfluxDBSink.sinkType,
        "webhook": WebhookSink.sinkType,
        "otlp": OTLPSink.sinkType,
        "prometheus": PrometheusSink.sinkType,
        "dashboard": DashboardSink.sinkType,
    ]

    /// Allowed keys per sink type (besides `type` and `name`); `buffer` is the runner's.
    public static let allowedKeys: [String: [String]] = types.mapValues { Array(Set($0.keys + ["buffer"])).sorted() }

    /// Keys a sink type cannot do without.
    public static let requiredKeys: [String: [String]] = types.mapValues(\.required).filter { !$0.value.isEmpty }

    public static let defaultBuffer = 65_536

    /// Creates a runner for each sink entry. Entries that fail are reported
    /// through `errors` (with their position) and skipped; the others work.
    public static func makeRunners(_ configs: [ComponentConfig], logger: Logger,
                                   reuse: [SinkRunner] = [], errors: inout [ConfigError]) -> [SinkRunner] {
        var out: [SinkRunner] = []
        for c in configs {
            if let same = reuse.first(where: { $0.identity == c.identity && $0.name == c.name }) {
                out.append(same)
                continue
            }
            guard let type = types[c.type] else {
                errors.append(ConfigError(mark: c.mark, "unknown sink type '\(c.type)'"))
                continue
            }
            if let missing = type.required.first(where: { c.node[$0] == nil }) {
                errors.append(ConfigError(mark: c.mark, "sink '\(c.name)' (\(c.type)) needs '\(missing)'"))
                continue
            }
            let d = ConfigDecoder()
            let ctx = "in sink '\(c.name)'"
            var buffer = defaultBuffer
            if let b = c.node["buffer"] { buffer = d.int(b, "'buffer'", context: ctx, range: 16...16_777_216) ?? buffer }
            var sink: (any Sink)?
            do {
                sink = try type.make(c, d, ctx, logger)
            } catch {
                errors.append(ConfigError(mark: c.mark, "sink '\(c.name)' (\(c.type)): \(error)"))
            }
            errors.append(contentsOf: d.errors)
            if d.errors.isEmpty, let sink {
                out.append(SinkRunner(name: c.name, type: c.type, identity: c.identity, sink: sink, buffer: buffer, logger: logger))
            } else if let sink {
                sink.close()
            }
        }
        return out
    }
}
