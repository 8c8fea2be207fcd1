import FerretCore
import Foundation

/// Writes one JSON object per line (schema in the README) to a file or stdout.
public final class JSONLSink: Sink, @unchecked Sendable {
    public static let keys = ["path", "buffer", "signals", "append"]
    private let fd: Int32
    private let ownsFD: Bool
    private let signals: Set<String>
    private var writer = JSONWriter(capacity: 1 << 20)
    public let path: String

    /// - Parameters:
    ///   - path: a file (created, 0640) or "-" for stdout.
    ///   - signals: the signal kinds to write (empty = all).
    public init(path: String, signals: Set<String> = [], append: Bool = true) throws {
        self.path = path
        self.signals = signals
        if path == "-" {
            fd = STDOUT_FILENO
            ownsFD = false
        } else {
            let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
            try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC)
            let f = open(path, flags, 0o640)
            guard f >= 0 else { throw SinkError("cannot open '\(path)': \(String(cString: strerror(errno)))") }
            fd = f
            ownsFD = true
        }
    }

    public func write(_ batch: [Signal]) throws {
        for s in batch {
            if !signals.isEmpty && !signals.contains(s.kindName) { continue }
            writer.signalLine(s)
            if writer.bytes.count >= 1 << 20 { try flush() }
        }
    }

    public func flush() throws {
        guard !writer.bytes.isEmpty else { return }
        defer { writer.bytes.removeAll(keepingCapacity: true) }
        try writer.bytes.withUnsafeBytes { buf in
            var off = 0
            while off < buf.count {
                let n = Foundation.write(fd, buf.baseAddress! + off, buf.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw SinkError("write to '\(path)' failed: \(String(cString: strerror(errno)))")
                }
                off += n
            }
        }
    }

    public func close() {
        if ownsFD { Foundation.close(fd) }
    }
}

extension JSONLSink {
    public struct Config: Equatable, Sendable {
        var path: String
        var signals: Set<String>
        var append: Bool
    }

    public static let sinkType = SinkType(keys: keys, required: ["path"], decode: { c, d, ctx -> Config? in
        guard let pathNode = c.node["path"], let path = d.string(pathNode, "'path'", context: ctx) else { return nil }
        var kinds = Set<String>()
        if let s = c.node["signals"] {
            for k in d.stringList(s, "'signals'", context: ctx) ?? [] {
                if ["metric", "span", "profile", "event"].contains(k) { kinds.insert(k) } else {
                    d.fail(s.mark, "unknown signal kind '\(k)' \(ctx); use metric, span, profile or event")
                }
            }
        }
        let append = c.node["append"].flatMap { d.bool($0, "'append'", context: ctx) } ?? true
        return Config(path: path, signals: kinds, append: append)
    }, make: { cf, c, _ in
        do { return try JSONLSink(path: cf.path, signals: cf.signals, append: cf.append) } catch {
            throw ConfigError(mark: c.node["path"]?.mark ?? c.mark, "sink '\(c.name)': \(error)")
        }
    })
}
