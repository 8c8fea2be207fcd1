import Foundation
import GoTestSupport
import XCTest

/// A Prometheus server on a free loopback port, scraping one target every
/// second, with its own config and storage under `dir`. Stopped by `stop()`
/// (SIGTERM, then SIGKILL) or on deinit.
public final class PrometheusServerProcess {
    /// Debian's prometheus.
    public static let prometheus = "/usr/bin/prometheus"
    /// The number of an instant-vector result ([time, "value"]).
    public static func value(_ result: [String: Any]) -> Double {
        guard let v = result["value"] as? [Any], v.count == 2, let s = v[1] as? String else { return .nan }
        return Double(s) ?? .nan
    }

    public let process = Process()
    public let port: Int
    public let dir: String
    private let log: String

    public init(dir: String, target: String) throws {
        self.dir = dir
        try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        port = try TestSupport.freePort()
        log = dir + "/prometheus.log"
        try """
        global:
          scrape_interval: 1s
          scrape_timeout: 1s
          evaluation_interval: 1s
        scrape_configs:
          - job_name: ferret
            static_configs:
              - targets: ["\(target)"]
        """.write(toFile: dir + "/prometheus.yml", atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.executableURL = URL(fileURLWithPath: Self.prometheus)
        process.arguments = ["--config.file=\(dir)/prometheus.yml", "--storage.tsdb.path=\(dir)/data",
                             "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn"]
        process.standardOutput = logHandle
        process.standardError = logHandle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        var ready = false
        Wait.until("prometheus ready", timeout: 60, poll: 0.2) {
            ready = (try? HTTP.get(port: port, path: "/-/ready", timeout: 2))?.status == 200
            return ready || !process.isRunning
        }
        if ready { return }
        stop()
        throw TestSupport.TestError("prometheus did not become ready on port \(port):\n\(logText)")
    }

    public var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    public func stop() {
        guard process.isRunning else { return }
        process.terminate()
        Wait.until("prometheus stopped", timeout: 10, poll: 0.05) { !process.isRunning }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    deinit { stop() }

    /// The result vector of an instant query.
    public func query(_ promql: String) throws -> [[String: Any]] {
        let q = promql.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? promql
        let obj = try HTTP.json(port: port, path: "/api/v1/query?query=\(q)")
        guard obj["status"] as? String == "success", let data = obj["data"] as? [String: Any] else {
            throw TestSupport.TestError("query \(promql) failed: \(obj)")
        }
        return data["result"] as? [[String: Any]] ?? []
    }

    public func waitForSeries(_ promql: String, timeout: Double) throws -> [String: Any] {
        var first: [String: Any]?
        try Wait.until("a result for \(promql)", timeout: timeout, poll: 0.5) {
            first = try query(promql).first
            return first != nil
        }
        if let first { return first }
        throw TestSupport.TestError("no result for \(promql) within \(Int(timeout)) s; targets: \(targets())\nprometheus log:\n\(logText)")
    }

    /// Waits for the first result's value to satisfy `predicate`; returns it.
    public func waitForValue(_ promql: String, timeout: Double, _ predicate: (Double) -> Bool) throws -> Double {
        var last = Double.nan
        if try Wait.until("\(promql) qualifying", timeout: timeout, poll: 0.5, {
            guard let first = try query(promql).first else { return false }
            last = Self.value(first)
            return predicate(last)
        }) { return last }
        throw TestSupport.TestError("\(promql) never qualified within \(Int(timeout)) s (last \(last)); targets: \(targets())")
    }

    public func waitForEmpty(_ promql: String, timeout: Double) throws -> Bool {
        try Wait.until("no result for \(promql)", timeout: timeout, poll: 0.5) { try query(promql).isEmpty }
    }

    /// The scrape targets' health, for failure messages.
    public func targets() -> String {
        guard let obj = try? HTTP.json(port: port, path: "/api/v1/targets"),
              let active = (obj["data"] as? [String: Any])?["activeTargets"] as? [[String: Any]] else { return "?" }
        return active.map { "\($0["scrapeUrl"] ?? "?") \($0["health"] ?? "?") \($0["lastError"] ?? "")" }.joined(separator: "; ")
    }
}
