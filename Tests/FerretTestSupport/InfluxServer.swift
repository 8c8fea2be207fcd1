import Foundation
import GoTestSupport
import FerretDelivery
import XCTest

/// A real InfluxDB 1.6 (Debian's `influxdb`) on loopback, in a temporary
/// directory, started and stopped by the test.
public final class InfluxServer {
    public let dir: String
    public let port: Int
    public private(set) var process: Process?
    public var url: String { "http://127.0.0.1:\(port)" }

    public init() throws {
        dir = TestSupport.tempDir("influxd")
        port = try TestSupport.freePort()
        let rpc = try TestSupport.freePort()
        let config = """
            reporting-disabled = true
            bind-address = "127.0.0.1:\(rpc)"
            [meta]
              dir = "\(dir)/meta"
            [data]
              dir = "\(dir)/data"
              wal-dir = "\(dir)/wal"
              query-log-enabled = false
            [monitor]
              store-enabled = false
            [http]
              enabled = true
              bind-address = "127.0.0.1:\(port)"
              log-enabled = false
            [continuous_queries]
              enabled = false
            [ifql]
              enabled = false
            [logging]
              level = "warn"
            """
        try config.write(toFile: dir + "/influxdb.conf", atomically: true, encoding: .utf8)
        try start()
    }

    public func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/influxd")
        p.arguments = ["-config", dir + "/influxdb.conf"]
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        let log = dir + "/influxd.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        p.standardError = FileHandle(forWritingAtPath: log)
        try p.run()
        process = p
        if Wait.until("influxd answering /ping", timeout: 30, poll: 0.1, {
            if case .success(let a) = get("/ping"), a.status == 204 { return true }
            return false
        }) { return }
        throw TestSupport.TestError("influxd did not answer /ping on \(url) within 30 s: \(String(decoding: FileManager.default.contents(atPath: log) ?? Data(), as: UTF8.self).suffix(2000))")
    }

    public func stop() {
        guard let p = process, p.isRunning else { return }
        p.terminate()
        p.waitUntilExit()
        process = nil
    }

    deinit { stop() }

    public func get(_ pathAndQuery: String) -> Result<HTTPPoster.Answer, any Error> {
        guard let poster = try? HTTPPoster(url: url + pathAndQuery, method: .GET, headers: [], timeout: .seconds(10)) else {
            return .failure(TestSupport.TestError("bad url"))
        }
        return poster.exchange([], maxBody: 64 << 20)
    }

    /// Runs InfluxQL; returns the decoded JSON answer.
    public func query(_ q: String, db: String) throws -> [String: Any] {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        let path = "/query?epoch=ns&db=\(db.addingPercentEncoding(withAllowedCharacters: allowed)!)&q=\(q.addingPercentEncoding(withAllowedCharacters: allowed)!)"
        let a = try get(path).get()
        guard a.status == 200, let obj = try JSONSerialization.jsonObject(with: Data(a.body.utf8)) as? [String: Any] else {
            throw TestSupport.TestError("query \(q): HTTP \(a.status) \(a.body.prefix(500))")
        }
        return obj
    }

    /// The series of a query's first result: name, tags, columns, rows.
    public func series(_ q: String, db: String) throws -> [(name: String, tags: [String: String], columns: [String], values: [[Any]])] {
        let obj = try query(q, db: db)
        let results = obj["results"] as? [[String: Any]] ?? []
        if let e = results.first?["error"] as? String { throw TestSupport.TestError("query \(q): \(e)") }
        return (results.first?["series"] as? [[String: Any]] ?? []).map {
            ($0["name"] as? String ?? "", $0["tags"] as? [String: String] ?? [:], $0["columns"] as? [String] ?? [],
             $0["values"] as? [[Any]] ?? [])
        }
    }

    /// How many metric points a database holds: one `value` per gauge or
    /// counter point, one `count` per histogram point.
    public func pointCount(db: String) throws -> Int {
        var n = 0
        for field in ["value", "count"] {
            for s in try series("SELECT COUNT(\"\(field)\") FROM /.*/", db: db) {
                for row in s.values { n += (row.last as? NSNumber)?.intValue ?? 0 }
            }
        }
        return n
    }
}
