import Foundation
import Logging

/// Builds sinks from their configuration entries.
public enum SinkRegistry {
    /// Allowed keys per sink type (besides `type` and `name`).
    public static let allowedKeys: [String: [String]] = [
        "console": ConsoleSink.keys,
        "jsonl": JSONLSink.keys,
        "pprof_dir": PprofDirSink.keys,
    ]

    /// Keys a sink type cannot do without.
    public static let requiredKeys: [String: [String]] = ["jsonl": ["path"], "pprof_dir": ["path"]]

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
            let d = ConfigDecoder()
            let ctx = "in sink '\(c.name)'"
            var buffer = defaultBuffer
            if let b = c.node["buffer"] { buffer = d.int(b, "'buffer'", context: ctx, range: 16...16_777_216) ?? buffer }
            var sink: (any Sink)?
            switch c.type {
            case "jsonl":
                guard let pathNode = c.node["path"] else {
                    errors.append(ConfigError(mark: c.mark, "sink '\(c.name)' (jsonl) needs a 'path' (a file, or - for stdout)"))
                    continue
                }
                let path = d.string(pathNode, "'path'", context: ctx) ?? ""
                var kinds = Set<String>()
                if let s = c.node["signals"] {
                    for k in d.stringList(s, "'signals'", context: ctx) ?? [] {
                        if ["metric", "span", "profile", "event"].contains(k) { kinds.insert(k) } else {
                            d.fail(s.mark, "unknown signal kind '\(k)' \(ctx); use metric, span, profile or event")
                        }
                    }
                }
                let append = c.node["append"].flatMap { d.bool($0, "'append'", context: ctx) } ?? true
                if d.errors.isEmpty {
                    do { sink = try JSONLSink(path: path, signals: kinds, append: append) } catch {
                        errors.append(ConfigError(mark: pathNode.mark, "sink '\(c.name)': \(error)"))
                    }
                }
            case "pprof_dir":
                guard let pathNode = c.node["path"] else {
                    errors.append(ConfigError(mark: c.mark, "sink '\(c.name)' (pprof_dir) needs a 'path' (a directory)"))
                    continue
                }
                let path = d.string(pathNode, "'path'", context: ctx) ?? ""
                let maxBytes = c.node["max_bytes"].flatMap { d.int($0, "'max_bytes'", context: ctx, range: 4096...Int.max) } ?? (1 << 30)
                let maxAge = c.node["max_age"].flatMap { d.duration($0, "'max_age'", context: ctx, minimum: .seconds(1)) }
                if d.errors.isEmpty {
                    do { sink = try PprofDirSink(directory: path, maxBytes: Int64(maxBytes), maxAge: maxAge) } catch {
                        errors.append(ConfigError(mark: pathNode.mark, "sink '\(c.name)': \(error)"))
                    }
                }
            case "console":
                let every = c.node["every"].flatMap { d.duration($0, "'every'", context: ctx, minimum: .milliseconds(100)) } ?? .seconds(5)
                var stream = "stdout"
                if let s = c.node["stream"], let v = d.string(s, "'stream'", context: ctx) {
                    if v == "stdout" || v == "stderr" { stream = v } else { d.fail(s.mark, "'stream' must be stdout or stderr \(ctx), got '\(v)'") }
                }
                let events = c.node["events"].flatMap { d.bool($0, "'events'", context: ctx) } ?? true
                let maxMetrics = c.node["max_metrics"].flatMap { d.int($0, "'max_metrics'", context: ctx, range: 1...10_000) } ?? 12
                if d.errors.isEmpty { sink = ConsoleSink(every: every, stream: stream, events: events, maxMetrics: maxMetrics) }
            default:
                errors.append(ConfigError(mark: c.mark, "unknown sink type '\(c.type)'"))
            }
            errors.append(contentsOf: d.errors)
            if let sink {
                out.append(SinkRunner(name: c.name, type: c.type, identity: c.identity, sink: sink, buffer: buffer, logger: logger))
            }
        }
        return out
    }
}
