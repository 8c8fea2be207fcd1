import Foundation
import GoTestSupport

/// The OTLP/HTTP test receiver (Fixtures/otlp_receiver.py) as a child
/// process: it decodes each request with PyPI's opentelemetry-proto and logs
/// what it decoded (MessageToDict, proto field names) as JSON lines, which
/// these helpers read back. Terminated on deinit.
public final class OTLPReceiver {
    public let process = Process()
    public let port: Int
    public let log: String

    /// The venv of scripts/setup.sh that holds opentelemetry-proto.
    public static var python: String {
        (ProcessInfo.processInfo.environment["FERRET_PY_VENV"] ?? "/opt/ferret-py") + "/bin/python"
    }

    /// - Parameter failFirst: how many requests are answered 503 before it starts taking them.
    public init(failFirst: Int = 0, maxSeconds: Int = 300) throws {
        let python = Self.python
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw TestSupport.TestError("\(python) is missing: run scripts/setup.sh (it installs opentelemetry-proto there)")
        }
        log = TestSupport.tempDir("otlp") + "/received.jsonl"
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [TestSupport.repoRoot + "/Tests/FerretCoreTests/Fixtures/otlp_receiver.py",
                             "--out", log, "--fail-first", String(failFirst), "--max-seconds", String(maxSeconds)]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // First line: "listening PORT".
        var line = Data()
        while true {
            let b = try out.fileHandleForReading.read(upToCount: 1) ?? Data()
            if b.isEmpty {
                let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                throw TestSupport.TestError("otlp_receiver.py exited before listening:\n\(e)")
            }
            if b.first == UInt8(ascii: "\n") { break }
            line.append(b)
        }
        let text = String(decoding: line, as: UTF8.self)
        guard text.hasPrefix("listening "), let p = Int(text.dropFirst("listening ".count)) else {
            throw TestSupport.TestError("otlp_receiver.py said '\(text)'")
        }
        port = p
    }

    deinit {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }

    public var endpoint: String { "http://127.0.0.1:\(port)" }

    /// Every request logged so far.
    public func requests() -> [[String: Any]] {
        guard let text = try? String(contentsOfFile: log, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// Waits until `done` holds for the requests logged so far, and returns them.
    @discardableResult
    public func waitUntil(_ what: String, timeout: Double = 15, _ done: ([[String: Any]]) -> Bool) throws -> [[String: Any]] {
        var all: [[String: Any]] = []
        if Wait.until(what, timeout: timeout, poll: 0.05, { all = requests(); return done(all) }) { return all }
        let statuses = all.map { "\($0["path"] ?? "?") \($0["status"] ?? "?") \($0["error"] ?? "")" }
        throw TestSupport.TestError("timed out waiting for \(what); the receiver logged:\n\(statuses.joined(separator: "\n"))")
    }

    // MARK: - reading decoded requests

    /// The decoded request of each accepted request to `path`.
    public static func bodies(_ requests: [[String: Any]], path: String) -> [[String: Any]] {
        requests.filter { $0["path"] as? String == path && $0["status"] as? Int == 200 }.compactMap { $0["request"] as? [String: Any] }
    }

    /// Items of the innermost lists: e.g. (resource_metrics, scope_metrics, metrics),
    /// each paired with its resource's attributes and its scope.
    public static func items(_ bodies: [[String: Any]], _ outer: String, _ middle: String, _ inner: String)
        -> [(resource: [String: String], scope: [String: Any], item: [String: Any])] {
        var out: [(resource: [String: String], scope: [String: Any], item: [String: Any])] = []
        for b in bodies {
            for r in b[outer] as? [[String: Any]] ?? [] {
                let resource = attributes((r["resource"] as? [String: Any])?["attributes"])
                for s in r[middle] as? [[String: Any]] ?? [] {
                    for i in s[inner] as? [[String: Any]] ?? [] {
                        out.append((resource, s["scope"] as? [String: Any] ?? [:], i))
                    }
                }
            }
        }
        return out
    }

    /// KeyValue lists as "key": "type:value", the type being the AnyValue
    /// member that was set (s, i, d, b), so that a type change shows.
    public static func attributes(_ list: Any?) -> [String: String] {
        var out: [String: String] = [:]
        for kv in list as? [[String: Any]] ?? [] {
            guard let key = kv["key"] as? String else { continue }
            out[key] = anyValue(kv["value"])
        }
        return out
    }

    public static func anyValue(_ v: Any?) -> String {
        let v = v as? [String: Any] ?? [:]
        if let s = v["string_value"] as? String { return "s:\(s)" }
        if let i = v["int_value"] as? String { return "i:\(i)" }     // int64 is a JSON string
        if let d = v["double_value"] as? NSNumber { return "d:\(d.doubleValue)" }
        if let b = v["bool_value"] as? Bool { return "b:\(b)" }
        return "?:\(v)"
    }

    /// A protobuf bytes field as MessageToDict writes it (base64) → bytes.
    public static func bytes(_ v: Any?) -> [UInt8] {
        guard let s = v as? String, let d = Data(base64Encoded: s) else { return [] }
        return Array(d)
    }

    /// A (u)int64 field: a JSON string in MessageToDict's output.
    public static func uint64(_ v: Any?) -> UInt64? {
        (v as? String).flatMap { UInt64($0) }
    }
}
