import Foundation
import Glibc

/// A tiny HTTP/1.1 GET over a POSIX socket (no URLSession, no curl), and the
/// truthsrv fixture run as a child process.
///
/// Shared by the Go runtime reader tests (scheduler, heap).
public enum TruthClient {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// GETs `path` from `host:port` (IPv4 dotted address) with `Connection: close`,
    /// reads to EOF, and returns the status code and the body. Times out after `timeout` s.
    public static func get(host: String, port: UInt16, path: String, timeout: Double = 30) throws -> (status: Int, body: Data) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { throw Failure(description: "bad IPv4 address \(host)") }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw Failure(description: "connect \(host):\(port): \(String(cString: strerror(errno)))") }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n\r\n".utf8)
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "send: \(String(cString: strerror(errno)))") }
            sent += n
        }
        var response = Data()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { break }
            guard n > 0 else { throw Failure(description: "recv \(path): \(String(cString: strerror(errno)))") }
            response.append(contentsOf: buf[0..<n])
        }
        guard let sep = response.range(of: Data("\r\n\r\n".utf8)) else {
            throw Failure(description: "GET \(path): no HTTP header in \(response.count) bytes")
        }
        let head = String(decoding: response[..<sep.lowerBound], as: UTF8.self)
        let statusLine = head.split(separator: "\r\n").first ?? ""
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), let status = Int(parts[1]) else {
            throw Failure(description: "GET \(path): bad status line '\(statusLine)'")
        }
        var body = Data(response[sep.upperBound...])
        if head.lowercased().contains("transfer-encoding: chunked") { body = try dechunk(body, path: path) }
        return (status, body)
    }

    /// Decodes an HTTP/1.1 chunked body.
    static func dechunk(_ data: Data, path: String) throws -> Data {
        var out = Data()
        var i = data.startIndex
        while true {
            guard let lineEnd = data[i...].range(of: Data("\r\n".utf8)) else {
                throw Failure(description: "GET \(path): truncated chunked body")
            }
            let sizeText = String(decoding: data[i..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else {
                throw Failure(description: "GET \(path): bad chunk size '\(sizeText)'")
            }
            if size == 0 { return out }
            let start = lineEnd.upperBound
            guard data.distance(from: start, to: data.endIndex) >= size + 2 else {
                throw Failure(description: "GET \(path): truncated chunk")
            }
            out.append(data[start..<data.index(start, offsetBy: size)])
            i = data.index(start, offsetBy: size + 2)
        }
    }

    /// GETs `path` and decodes a JSON object; throws unless the status is 200.
    public static func json(host: String, port: UInt16, path: String) throws -> [String: Any] {
        let (status, body) = try get(host: host, port: port, path: path)
        guard status == 200 else {
            throw Failure(description: "GET \(path): HTTP \(status): \(String(decoding: body, as: UTF8.self))")
        }
        guard let obj = try JSONSerialization.jsonObject(with: body) as? [String: Any] else {
            throw Failure(description: "GET \(path): not a JSON object")
        }
        return obj
    }
}

/// What truthsrv reports about itself (GET /truth and friends).
public struct Truth {
    public var raw: [String: Any]
    public var pid: Int { int("pid") }
    public var goVersion: String { raw["go_version"] as? String ?? "" }
    public var goroutines: Int { int("goroutines") }
    public var cgoCalls: UInt64 { UInt64(int("cgo_calls")) }
    public var gomaxprocs: Int { int("gomaxprocs") }
    public var threads: Int { int("threads") }
    public var memstats: [String: UInt64] {
        (raw["memstats"] as? [String: Any] ?? [:]).compactMapValues { ($0 as? NSNumber)?.uint64Value }
    }
    public var metrics: [String: Double] {
        (raw["metrics"] as? [String: Any] ?? [:]).compactMapValues { ($0 as? NSNumber)?.doubleValue }
    }
    private func int(_ k: String) -> Int { (raw[k] as? NSNumber)?.intValue ?? -1 }
}

/// A running truthsrv child: started with arguments, "listening on ADDR" awaited,
/// stdout and stderr collected (stderr line by line, for GODEBUG traces).
public final class TruthServer: @unchecked Sendable {
    public let process = Process()
    private(set) var host = ""
    private(set) var port: UInt16 = 0
    private let lock = NSLock()
    private var stderrText = ""
    private let errPipe = Pipe()
    private let outPipe = Pipe()

    /// The program's host pid (nsenter's child when it runs in a container).
    public private(set) var pid: Int32 = 0
    /// The GET requests made through `truth` (what a tracer must count as spans).
    public var requests: Int { lock.withLock { requestCount } }
    private var requestCount = 0

    /// The truthsrv fixture's source folder (Tests/GoIntrospectionTests/Fixtures/truthsrv).
    public static let fixtureSource = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("GoIntrospectionTests/Fixtures/truthsrv").path

    /// Starts `binary`; in `container`, `binary` is the path inside it
    /// (`TestContainer.install`).
    public init(binary: String, arguments: [String], environment: [String: String] = [:], startTimeout: Double = 20,
                container: TestContainer? = nil) throws {
        if let container {
            let c = container.command(binary, arguments)
            process.executableURL = URL(fileURLWithPath: c.executable)
            process.arguments = c.arguments
        } else {
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = arguments
        }
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        process.standardOutput = outPipe
        process.standardError = errPipe
        process.standardInput = FileHandle.nullDevice
        errPipe.fileHandleForReading.readabilityHandler = { [weak self] h in
            let d = h.availableData
            guard let self, !d.isEmpty else { return }
            self.lock.withLock { self.stderrText += String(decoding: d, as: UTF8.self) }
        }
        try process.run()
        // The first stdout line: "listening on 127.0.0.1:PORT".
        let text = TestContainer.readLine(outPipe.fileHandleForReading.fileDescriptor, timeout: startTimeout)
        let addr = text.hasPrefix("listening on ") ? String(text.dropFirst("listening on ".count)) : ""
        let hp = addr.split(separator: ":")
        guard hp.count == 2, let port = UInt16(hp[1]) else {
            process.terminate()
            process.waitUntilExit()
            throw TruthClient.Failure(description: "\(binary): no 'listening on' line (got '\(text)'); stderr: \(stderr)")
        }
        host = String(hp[0])
        self.port = port
        pid = try container?.programPID(launcher: process.processIdentifier) ?? process.processIdentifier
    }

    public var stderr: String { lock.withLock { stderrText } }

    public func truth(_ path: String = "/truth") throws -> Truth {
        lock.withLock { requestCount += 1 }
        return Truth(raw: try TruthClient.json(host: host, port: port, path: path))
    }

    public func stop() {
        if process.isRunning {
            if pid != process.processIdentifier && pid > 0 { kill(pid, SIGKILL) }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        errPipe.fileHandleForReading.readabilityHandler = nil
    }

    deinit { stop() }
}
