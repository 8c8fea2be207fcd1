import Foundation
import GoIntrospection

/// Field offsets the BPF programs read, for one Go binary. Mirrors
/// `struct proc_info` in bpf/http_tracer.bpf.c (five u64, in this order).
public struct ProcOffsets: Sendable, Equatable {
    public var requestMethod: UInt64
    public var requestURL: UInt64
    public var requestHost: UInt64
    public var urlPath: UInt64
    public var responseStatus: UInt64

    public init(requestMethod: UInt64, requestURL: UInt64, requestHost: UInt64, urlPath: UInt64, responseStatus: UInt64) {
        self.requestMethod = requestMethod
        self.requestURL = requestURL
        self.requestHost = requestHost
        self.urlPath = urlPath
        self.responseStatus = responseStatus
    }

    /// The bytes of `struct proc_info`.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        for v in [requestMethod, requestURL, requestHost, urlPath, responseStatus] {
            withUnsafeBytes(of: v.littleEndian) { out += $0 }
        }
        return out
    }
}

/// Everything needed to trace one Go binary: where to probe and what to read.
public struct ProbePlan: Sendable {
    public static let serverFunction = "net/http.serverHandler.ServeHTTP"

    public var goVersion: String
    public var server: FunctionProbes
    public var offsets: ProcOffsets
    /// Where the offsets came from: "dwarf", "table" or "table (nearest patch …)".
    public var layoutSource: String

    public struct Unsupported: Error, CustomStringConvertible {
        public var description: String
        init(_ d: String) { description = d }
    }

    /// Plans the probes for `binary`. Throws `Unsupported` with a reason a
    /// user can act on: not Go, Go older than 1.17 (stack ABI), no net/http
    /// server linked in, or a version whose layouts are unknown.
    public static func make(for binary: GoBinary) throws -> ProbePlan {
        guard let version = binary.goVersion else { throw Unsupported("\(binary.path) is not a Go program") }
        guard let v = Self.minor(of: version) else { throw Unsupported("\(binary.path): unparsable Go version \(version)") }
        guard v >= 17 else {
            throw Unsupported("\(binary.path): \(version) passes arguments on the stack (before Go 1.17); only the register ABI is supported")
        }
        let table: PclnTable
        do { table = try binary.pclnTable() } catch { throw Unsupported("\(binary.path): no usable pclntab: \(error)") }
        guard let f = table.function(named: serverFunction) else {
            throw Unsupported("\(binary.path): \(serverFunction) is not linked in (no net/http server)")
        }
        let server = try RetFinder.probes(for: f, elf: binary.elf)
        let dwarf = binary.dwarf
        var sources: Set<String> = []
        func layout(_ type: String) throws -> TypeLayout {
            guard let (l, source) = GoLayoutTable.resolve(binaryDWARF: dwarf, goVersion: version, type: type) else {
                throw Unsupported("\(binary.path): unknown layout of \(type) for \(version) (no DWARF, not in the layout table)")
            }
            sources.insert(source)
            return l
        }
        func offset(_ type: TypeLayout, _ member: String) throws -> UInt64 {
            guard let m = type.member(member) else {
                throw Unsupported("\(binary.path): \(type.name) has no field \(member) in \(version)")
            }
            return UInt64(m.offset)
        }
        let req = try layout("net/http.Request")
        let url = try layout("net/url.URL")
        let resp = try layout("net/http.response")
        let offsets = ProcOffsets(
            requestMethod: try offset(req, "Method"), requestURL: try offset(req, "URL"),
            requestHost: try offset(req, "Host"), urlPath: try offset(url, "Path"),
            responseStatus: try offset(resp, "status"))
        return ProbePlan(goVersion: version, server: server, offsets: offsets,
                         layoutSource: sources.sorted().joined(separator: ", "))
    }

    /// 19 for "go1.19.8"; nil when unparsable or not Go 1.x.
    static func minor(of version: String) -> Int? {
        guard version.hasPrefix("go1.") else { return nil }
        let digits = version.dropFirst(4).prefix { $0.isNumber }
        return Int(digits)
    }
}
