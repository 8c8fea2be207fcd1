// procio: a collector written in Swift with FerretPluginKit (also the model for Swift plugin authors).
// For every attached process it reads /proc/PID/io and emits the bytes the
// process caused to be read from and written to storage, as the
// OpenTelemetry metric `process.disk.io` (counter, By, attribute
// disk.io.direction=read|write). It is a real, small, pull collector.
import FerretPluginKit
import Foundation
import LinuxProcess

public final class ProcIOCollector: FerretCollector {
    public static let name = "procio"
    public static let version = "1.0.0"
    public static let summary = "Storage I/O bytes per process from /proc/PID/io"

    public struct Settings: PluginSettings {
        /// Also emit process.io.chars: bytes passed through read/write syscalls (rchar/wchar).
        var include_chars: Bool?

        public enum CodingKeys: String, CodingKey, CaseIterable { case include_chars }
    }

    private let emit: Emitter
    private let includeChars: Bool
    private var pids: [Int32: String] = [:]
    private var warned = Set<Int32>()

    public init(context: PluginContext) throws {
        includeChars = try context.settings(Settings.self).include_chars ?? false
        emit = context.emit
    }

    public func attach(_ target: PluginTarget) throws {
        pids[target.pid] = target.comm
    }

    public func detach(pid: Int32) throws {
        guard pids.removeValue(forKey: pid) != nil else { throw PluginError.failed("pid \(pid) is not attached") }
        warned.remove(pid)
    }

    public func collect(now: UInt64) throws {
        var points: [Metric] = []
        for pid in pids.keys.sorted() {
            guard let text = try? String(contentsOfFile: "\(HostProc.path)/\(pid)/io", encoding: .utf8) else {
                if warned.insert(pid).inserted { emit.log(.warn, "cannot read /proc/\(pid)/io (gone, or not permitted)") }
                continue
            }
            var fields: [Substring: Double] = [:]
            for line in text.split(separator: "\n") {
                let kv = line.split(separator: ":", maxSplits: 1)
                if kv.count == 2, let v = Double(kv[1].trimmingCharacters(in: .whitespaces)) { fields[kv[0]] = v }
            }
            points.append(.counter("process.disk.io", fields["read_bytes"] ?? 0, unit: "By", pid: pid,
                                   attributes: [("disk.io.direction", .string("read"))]))
            points.append(.counter("process.disk.io", fields["write_bytes"] ?? 0, unit: "By", pid: pid,
                                   attributes: [("disk.io.direction", .string("write"))]))
            if includeChars {
                points.append(.counter("process.io.chars", fields["rchar"] ?? 0, unit: "By", pid: pid,
                                       attributes: [("disk.io.direction", .string("read"))]))
                points.append(.counter("process.io.chars", fields["wchar"] ?? 0, unit: "By", pid: pid,
                                       attributes: [("disk.io.direction", .string("write"))]))
            }
        }
        emit.metrics(points)
    }
}

// The one line that exports the plugin.
@_cdecl("ferret_plugin_entry") public func ferretPluginEntry(_ major: UInt32, _ minor: UInt32, _ host: UnsafePointer<ferret_host_api>?) -> UnsafeRawPointer? { FerretExport.entry(ProcIOCollector.self, major, minor, host) }
