import Foundation

/// A tiny HTTP/1.1 client over a POSIX socket, with request headers and the
/// response's headers (lower-cased names).
public enum HTTP {
    public struct Response {
        public var status: Int
        public var headers: [String: String]
        public var body: Data
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    public static func get(host: String = "127.0.0.1", port: Int, path: String, method: String = "GET",
                    headers: [String: String] = [:], timeout: Double = 30) throws -> Response {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestSupport.TestError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        inet_pton(AF_INET, host, &addr.sin_addr)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw TestSupport.TestError("connect \(host):\(port): \(String(cString: strerror(errno)))") }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        let request = Array((head + "\r\n").utf8)
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw TestSupport.TestError("send: \(String(cString: strerror(errno)))") }
            sent += n
        }
        var response = Data()
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { break }
            guard n > 0 else { throw TestSupport.TestError("recv \(path): \(String(cString: strerror(errno)))") }
            response.append(contentsOf: buf[0..<n])
        }
        guard let sep = response.range(of: Data("\r\n\r\n".utf8)) else {
            throw TestSupport.TestError("\(method) \(path): no HTTP header in \(response.count) bytes")
        }
        let lines = String(decoding: response[..<sep.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let parts = lines.first?.split(separator: " ") ?? []
        guard parts.count >= 2, let status = Int(parts[1]) else { throw TestSupport.TestError("bad status line \(lines.first ?? "")") }
        var fields: [String: String] = [:]
        for l in lines.dropFirst() {
            guard let c = l.firstIndex(of: ":") else { continue }
            fields[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Data(response[sep.upperBound...])
        if fields["transfer-encoding"] == "chunked" { body = try dechunk(body) }
        return Response(status: status, headers: fields, body: body)
    }

    public static func dechunk(_ data: Data) throws -> Data {
        var out = Data()
        var i = data.startIndex
        while let lineEnd = data[i...].range(of: Data("\r\n".utf8)) {
            let sizeText = String(decoding: data[i..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else { throw TestSupport.TestError("bad chunk size") }
            if size == 0 { return out }
            let start = lineEnd.upperBound
            guard data.distance(from: start, to: data.endIndex) >= size + 2 else { throw TestSupport.TestError("truncated chunk") }
            out.append(data[start..<data.index(start, offsetBy: size)])
            i = data.index(start, offsetBy: size + 2)
        }
        throw TestSupport.TestError("truncated chunked body")
    }

    /// A GET of Prometheus' HTTP API, decoded.
    public static func json(port: Int, path: String) throws -> [String: Any] {
        let r = try get(port: port, path: path)
        guard let obj = try JSONSerialization.jsonObject(with: r.body) as? [String: Any] else {
            throw TestSupport.TestError("GET \(path): HTTP \(r.status), not JSON: \(r.text)")
        }
        return obj
    }
}
