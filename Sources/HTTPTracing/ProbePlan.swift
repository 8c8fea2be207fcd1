import Foundation
import GoIntrospection

/// Field offsets the BPF programs read, for one Go binary. Mirrors
/// `struct proc_info` in bpf/http_tracer.bpf.c (u64 fields, in this order).
public struct ProcOffsets: Sendable, Equatable {
    /// How the binary's maps are laid out (`MAP_HMAP`, `MAP_SWISS` in the BPF C).
    public enum MapKind: UInt64, Sendable { case hmap = 1, swiss = 2 }

    public var requestMethod: UInt64 = 0
    public var requestURL: UInt64 = 0
    public var requestHost: UInt64 = 0
    public var urlPath: UInt64 = 0
    public var responseStatus: UInt64 = 0
    /// net/http.response.req: the server RET checks that rw is an *http.response.
    public var responseRequest: UInt64 = 0
    public var requestHeader: UInt64 = 0
    /// net/http.Request.Pattern (Go 1.23+); 0 when the version has none.
    public var requestPattern: UInt64 = 0
    public var urlHost: UInt64 = 0
    /// net/http.Response.StatusCode (client side).
    public var responseStatusCode: UInt64 = 0
    public var mapKind: MapKind = .hmap
    public var hmapB: UInt64 = 0
    public var hmapBuckets: UInt64 = 0
    public var hmapOldBuckets: UInt64 = 0
    public var swissUsed: UInt64 = 0
    public var swissDirPtr: UInt64 = 0
    public var swissDirLen: UInt64 = 0
    public var tableGroups: UInt64 = 0
    public var tableMask: UInt64 = 0
    /// runtime.g.goid, and runtime.g.parentGoid (0: parents come from
    /// newproc1's probes, or not at all).
    public var gGoid: UInt64 = 0
    public var gParentGoid: UInt64 = 0

    public init() {}

    /// The bytes of `struct proc_info`.
    public var bytes: [UInt8] {
        let fields: [UInt64] = [
            requestMethod, requestURL, requestHost, urlPath, responseStatus, responseRequest, requestHeader,
            requestPattern, urlHost, responseStatusCode, mapKind.rawValue, hmapB, hmapBuckets, hmapOldBuckets,
            swissUsed, swissDirPtr, swissDirLen, tableGroups, tableMask, gGoid, gParentGoid,
        ]
        var out: [UInt8] = []
        out.reserveCapacity(fields.count * 8)
        for v in fields {
            withUnsafeBytes(of: v.littleEndian) { out += $0 }
        }
        return out
    }

    /// sizeof(struct proc_info).
    public static let size = 21 * 8
}

/// How a client call made on a goroutine a handler started finds the
/// handler's server span.
public enum GoroutineParents: String, Sendable, CaseIterable {
    /// runtime.g.parentGoid where the runtime has it (Go 1.21+: no extra
    /// probe, one level: the handler's own goroutines, while it runs), else
    /// newproc1.
    case auto
    /// Probes on runtime.newproc1 (entry and RETs): any depth, and after the
    /// handler returned, at two probe hits per goroutine started, and
    /// net/http starts one per request.
    case newproc1
    /// Only calls made on the handler's own goroutine are parented.
    case off
}

/// Everything needed to trace one Go binary: where to probe and what to read.
public struct ProbePlan: Sendable {
    public static let serverFunction = "net/http.serverHandler.ServeHTTP"
    public static let clientFunction = "net/http.(*Transport).roundTrip"
    public static let spawnFunction = "runtime.newproc1"

    public var goVersion: String
    /// Probes on the server function; nil when the binary has no net/http server.
    public var server: FunctionProbes?
    /// Probes on the client function; nil when the binary makes no HTTP calls.
    public var client: FunctionProbes?
    /// Probes on runtime.newproc1 (with client probes only: they carry a
    /// handler's span to the goroutines it starts).
    public var spawn: FunctionProbes?
    /// How goroutines find their handler's span: "parentGoid", "newproc1" or "off".
    public var parenting: String
    public var offsets: ProcOffsets
    /// Where the offsets came from: "dwarf", "table" or "table (nearest patch …)".
    public var layoutSource: String

    public struct Unsupported: Error, CustomStringConvertible {
        public var description: String
        init(_ d: String) { description = d }
    }

    /// Number of uprobes the plan attaches.
    public var probeCount: Int {
        [server, client, spawn].compactMap { $0 }.reduce(0) { $0 + 1 + $1.returnFileOffsets.count }
    }

    /// Plans the probes for `binary`. Throws `Unsupported` with a reason a
    /// user can act on: not Go, Go older than 1.17 (stack ABI), neither a
    /// net/http server nor client linked in, or a version whose layouts are
    /// unknown.
    public static func make(for binary: GoBinary, goroutineParents: GoroutineParents = .auto) throws -> ProbePlan {
        guard let version = binary.goVersion else { throw Unsupported("\(binary.path) is not a Go program") }
        guard let v = Self.minor(of: version) else { throw Unsupported("\(binary.path): unparsable Go version \(version)") }
        guard v >= 17 else {
            throw Unsupported("\(binary.path): \(version) passes arguments on the stack (before Go 1.17); only the register ABI is supported")
        }
        let table: PclnTable
        do { table = try binary.pclnTable() } catch { throw Unsupported("\(binary.path): no usable pclntab: \(error)") }
        let serverFunc = table.function(named: serverFunction)
        let clientFunc = table.function(named: clientFunction)
        guard serverFunc != nil || clientFunc != nil else {
            throw Unsupported("\(binary.path): neither \(serverFunction) nor \(clientFunction) is linked in (no net/http)")
        }
        // One capstone load for both functions.
        let (server, client) = try X86Decoder.session { () throws -> (FunctionProbes?, FunctionProbes?) in
            (try serverFunc.map { try RetFinder.probes(for: $0, elf: binary.elf) },
             try clientFunc.map { try RetFinder.probes(for: $0, elf: binary.elf) })
        }
        let dwarf = binary.dwarf
        defer { binary.releaseDWARF() }
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
        var o = ProcOffsets()
        o.requestMethod = try offset(req, "Method")
        o.requestURL = try offset(req, "URL")
        o.requestHost = try offset(req, "Host")
        o.requestHeader = try offset(req, "Header")
        o.requestPattern = req.member("Pattern").map { UInt64($0.offset) } ?? 0
        o.urlPath = try offset(url, "Path")
        o.urlHost = try offset(url, "Host")
        if server != nil {
            let resp = try layout("net/http.response")
            o.responseStatus = try offset(resp, "status")
            o.responseRequest = try offset(resp, "req")
        }
        if client != nil {
            o.responseStatusCode = try offset(try layout("net/http.Response"), "StatusCode")
        }
        // Swiss tables from Go 1.24, unless built with GOEXPERIMENT=noswissmap
        // (whose runtime keeps the old map code, hashGrow among it).
        if v >= 24, table.function(named: "runtime.hashGrow") == nil {
            let m = try layout("internal/runtime/maps.Map")
            let t = try layout("internal/runtime/maps.table")
            let g = try layout("internal/runtime/maps.groupsReference")
            o.mapKind = .swiss
            o.swissUsed = try offset(m, "used")
            o.swissDirPtr = try offset(m, "dirPtr")
            o.swissDirLen = try offset(m, "dirLen")
            o.tableGroups = try offset(t, "groups") + offset(g, "data")
            o.tableMask = try offset(t, "groups") + offset(g, "lengthMask")
        } else {
            let h = try layout("runtime.hmap")
            o.mapKind = .hmap
            o.hmapB = try offset(h, "B")
            o.hmapBuckets = try offset(h, "buckets")
            o.hmapOldBuckets = try offset(h, "oldbuckets")
        }
        var spawn: FunctionProbes?
        var parenting = "off"
        if client != nil, server != nil, goroutineParents != .off {
            let g = try layout("runtime.g")
            o.gGoid = try offset(g, "goid")
            if goroutineParents == .auto, let parent = g.member("parentGoid") {
                o.gParentGoid = UInt64(parent.offset)
                parenting = "parentGoid"
            } else if let f = table.function(named: spawnFunction) {
                spawn = try RetFinder.probes(for: f, elf: binary.elf)
                parenting = "newproc1"
            }
        }
        return ProbePlan(goVersion: version, server: server, client: client, spawn: spawn, parenting: parenting,
                         offsets: o, layoutSource: sources.sorted().joined(separator: ", "))
    }

    /// 19 for "go1.19.8"; nil when unparsable or not Go 1.x.
    static func minor(of version: String) -> Int? {
        guard version.hasPrefix("go1.") else { return nil }
        let digits = version.dropFirst(4).prefix { $0.isNumber }
        return Int(digits)
    }
}
