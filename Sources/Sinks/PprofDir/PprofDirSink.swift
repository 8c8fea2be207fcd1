import FerretCore
import Foundation
import Glibc
import Pprof

/// `pprof_dir`: writes every profile as a file,
/// `<path>/<ferret.group>/<pid>-<start unix nanos>.pb.gz` for CPU profiles and
/// `<pid>-<type>-<start unix nanos>.pb.gz` for the others (gzipped profile.proto,
/// ready for `go tool pprof`), and records the path on the profile for the sinks
/// after it. A size cap (`max_bytes`) and an age cap (`max_age`) remove the oldest
/// files first. Files are written to a temporary name and renamed, so a reader
/// never sees half a profile.
public final class PprofDirSink: AheadSink, @unchecked Sendable {
    public static let keys = ["path", "max_bytes", "max_age"]

    public let directory: String
    public let maxBytes: Int64
    public let maxAgeNanos: UInt64?
    private let lock = NSLock()
    /// Files written or found, oldest first: (path, size, mtime ns).
    private var files: [(path: String, size: Int64, time: UInt64)] = []
    private var total: Int64 = 0

    public init(directory: String, maxBytes: Int64 = 1 << 30, maxAge: Duration? = nil) throws {
        self.directory = directory
        self.maxBytes = maxBytes
        maxAgeNanos = maxAge.map { UInt64($0.components.seconds) * 1_000_000_000 + UInt64($0.components.attoseconds / 1_000_000_000) }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        guard access(directory, W_OK) == 0 else { throw SinkError("\(directory) is not writable") }
        // Profiles from earlier runs count against the caps.
        if let e = FileManager.default.enumerator(atPath: directory) {
            for case let rel as String in e where rel.hasSuffix(".pb.gz") {
                let p = directory + "/" + rel
                var st = stat()
                if stat(p, &st) == 0 {
                    files.append((p, Int64(st.st_size), UInt64(st.st_mtim.tv_sec) * 1_000_000_000 + UInt64(st.st_mtim.tv_nsec)))
                    total += Int64(st.st_size)
                }
            }
        }
        files.sort { $0.time < $1.time }
    }

    public struct SinkError: Error, CustomStringConvertible {
        public var description: String
        init(_ d: String) { description = d }
    }

    /// A file name part from a label: no separators, no dot-only names.
    static func safe(_ s: String) -> String {
        let mapped = String(s.map { $0 == "/" || $0 == "\0" ? "_" : $0 }.prefix(100))
        return mapped.isEmpty || mapped == "." || mapped == ".." ? "_" : mapped
    }

    public func annotate(_ batch: inout [Signal]) throws {
        var firstError: Error?
        for i in batch.indices {
            guard case .profile(var p) = batch[i] else { continue }
            do {
                p.path = try store(p)
                batch[i] = .profile(p)
            } catch {
                if firstError == nil { firstError = error }
            }
        }
        if let firstError { throw firstError }
    }

    public func write(_ batch: [Signal]) throws {}

    private func store(_ p: Profile) throws -> String {
        let group = Self.safe(p.resource.group ?? "ungrouped")
        let pid = p.resource.pid ?? 0
        let dir = directory + "/" + group
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // CPU profiles keep the plain name; other types say theirs (goroutine).
        let kind = p.profileType == "cpu" || p.profileType.isEmpty ? "" : "-" + Self.safe(p.profileType)
        let path = "\(dir)/\(pid)\(kind)-\(p.startUnixNano).pb.gz"
        let tmp = path + ".tmp"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(p.data)) else {
            throw SinkError("cannot write \(tmp): \(String(cString: strerror(errno)))")
        }
        guard rename(tmp, path) == 0 else {
            let e = String(cString: strerror(errno))
            unlink(tmp)
            throw SinkError("cannot rename \(tmp) to \(path): \(e)")
        }
        lock.lock()
        defer { lock.unlock() }
        files.append((path, Int64(p.data.count), Clock.unixNanos()))
        total += Int64(p.data.count)
        prune(now: Clock.unixNanos())
        return path
    }

    /// Removes the oldest files while over the size cap or past the age cap (never
    /// the file just written).
    private func prune(now: UInt64) {
        while files.count > 1 {
            let f = files[0]
            let tooOld = maxAgeNanos.map { now > f.time && now - f.time > $0 } ?? false
            guard total > maxBytes || tooOld else { break }
            unlink(f.path)
            total -= f.size
            files.removeFirst()
        }
    }

    /// Bytes and files currently kept (tests, self-metrics).
    public var usage: (bytes: Int64, files: Int) { lock.withLock { (total, files.count) } }
}

extension PprofDirSink {
    public struct Config: Equatable, Sendable {
        var path: String
        var maxBytes: Int
        var maxAge: Duration?
    }

    public static let sinkType = SinkType(keys: keys, required: ["path"], decode: { c, d, ctx -> Config? in
        guard let pathNode = c.node["path"], let path = d.string(pathNode, "'path'", context: ctx) else { return nil }
        let maxBytes = c.node["max_bytes"].flatMap { d.int($0, "'max_bytes'", context: ctx, range: 4096...Int.max) } ?? (1 << 30)
        let maxAge = c.node["max_age"].flatMap { d.duration($0, "'max_age'", context: ctx, minimum: .seconds(1)) }
        return Config(path: path, maxBytes: maxBytes, maxAge: maxAge)
    }, make: { cf, c, _ in
        do { return try PprofDirSink(directory: cf.path, maxBytes: Int64(cf.maxBytes), maxAge: cf.maxAge) } catch {
            throw ConfigError(mark: c.node["path"]?.mark ?? c.mark, "sink '\(c.name)': \(error)")
        }
    })
}
