import GoBinaryFormat

/// One record of a Go program's memory profile, as `runtime.MemProfile`
/// reports it: the allocation site's stack (return PCs, run time) and the
/// sampled counts of the published (`active`) cycle.
public struct HeapProfileRecord: Sendable, Equatable {
    public var stack: [UInt64]
    /// The bucket's object size class (bytes per object sampled here).
    public var size: UInt64
    public var allocObjects, freeObjects, allocBytes, freeBytes: UInt64
    public var inuseObjects: UInt64 { allocObjects &- freeObjects }
    public var inuseBytes: UInt64 { allocBytes &- freeBytes }
}

/// Reads a Go program's heap profile from outside it (issue #20, work in
/// progress): the list of memory-profile buckets at `runtime.mbuckets`, each
/// bucket's stack and `memRecord.active`, and `runtime.MemProfileRate`.
/// process_vm_readv only. Written by hand: no library reads the runtime's
/// profile buckets from outside.
///
/// Layout (runtime/mprof.go, Go 1.19-1.27): a bucket is {next, allnext, typ,
/// hash, size, nstk}, then nstk PCs, then the record; memRecord is {active,
/// future[3]} of memRecordCycle, which is {allocs, frees, alloc_bytes,
/// free_bytes} up to Go 1.26 and {allocs, frees} from Go 1.27 (bytes are size *
/// count there).
public final class HeapProfileReader: @unchecked Sendable {
    public let pid: Int32
    public let goVersion: String
    public let loadBias: UInt64
    let memory: ProcessMemory
    let mbuckets: UInt64
    let memProfileRate: UInt64
    let header: (allnext: RuntimeField, typ: RuntimeField, size: RuntimeField, nstk: RuntimeField, bytes: Int)
    let cycleHasBytes: Bool
    let maxDepth: Int
    public let pcln: PclnTable

    public init(pid: Int32, binary: GoBinary) throws {
        let globals = try RuntimeGlobalAddresses(pid: pid, binary: binary, required: ["runtime.mbuckets", "runtime.MemProfileRate"])
        let version = globals.version
        let fields = RuntimeFieldResolver(goVersion: version, dwarf: binary.dwarf)
        defer { binary.releaseDWARF() }
        guard let bucket = fields.layout(of: "runtime.bucket"), let cycle = fields.layout(of: "runtime.memRecordCycle") else {
            throw IntrospectionError(fields.missingLayoutReason("runtime.bucket"), kind: .unknownLayout)
        }
        let f = { (path: String) throws -> RuntimeField in try fields.field(path, in: "runtime.bucket") }
        header = (try f("allnext"), try f("typ"), try f("size"), try f("nstk"), bucket.size)
        cycleHasBytes = cycle.members.contains { $0.name == "alloc_bytes" }
        guard cycle.size == (cycleHasBytes ? 32 : 16) else {
            throw IntrospectionError("\(version): runtime.memRecordCycle is \(cycle.size) bytes, not a known layout", kind: .unknownLayout)
        }
        let minor = Int(version.dropFirst(4).prefix { $0.isNumber }) ?? 0
        maxDepth = minor >= 23 ? 1024 : 32
        mbuckets = try globals.global("runtime.mbuckets", sizes: [8]).address
        memProfileRate = try globals.global("runtime.MemProfileRate", sizes: [8]).address
        self.pid = pid
        goVersion = version
        loadBias = globals.bias
        memory = ProcessMemory(pid: pid)
        pcln = try binary.pclnTable()
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// The profile's records and the program's MemProfileRate. The walk is
    /// checked before it is trusted: it ends within `maxBuckets`, every bucket
    /// is a memory-profile bucket (typ 1) with a stack depth the runtime
    /// allows, and every PC lies in the binary's text.
    public func read(maxBuckets: Int = 1_000_000) throws -> (rate: Int64, records: [HeapProfileRecord]) {
        let rate = Int64(bitPattern: try memory.read(UInt64.self, at: memProfileRate))
        var records: [HeapProfileRecord] = []
        var next = try memory.read(UInt64.self, at: mbuckets)
        var seen = Set<UInt64>()
        let cycleBytes = cycleHasBytes ? 32 : 16
        while next != 0 {
            guard seen.insert(next).inserted, seen.count <= maxBuckets else {
                throw Failure(description: "pid \(pid): the bucket list does not end within \(maxBuckets) buckets")
            }
            let h = try memory.read(next, count: header.bytes)
            let typ = header.typ.value(in: h) ?? -1, nstk = Int(header.nstk.value(in: h) ?? -1)
            guard typ == 1 else { throw Failure(description: "pid \(pid): bucket \(String(next, radix: 16)) has type \(typ), not memProfile") }
            guard (0...maxDepth).contains(nstk) else {
                throw Failure(description: "pid \(pid): bucket \(String(next, radix: 16)) has \(nstk) PCs (the runtime keeps at most \(maxDepth))")
            }
            let body = try memory.read(next &+ UInt64(header.bytes), count: nstk * 8 + cycleBytes)
            var stack: [UInt64] = []
            stack.reserveCapacity(nstk)
            for i in 0..<nstk {
                let pc = body.u64(at: i * 8) ?? 0
                // A PC of Go code (pclntab has a function for it), or of the C code of a cgo build.
                if pcln.function(containing: pc &- loadBias &- 1) == nil && pc < 0x1000 {
                    throw Failure(description: "pid \(pid): bucket \(String(next, radix: 16)) holds PC \(String(pc, radix: 16)), not code")
                }
                stack.append(pc)
            }
            let size = UInt64(header.size.value(in: h) ?? 0)
            let c = nstk * 8
            let allocs = body.u64(at: c) ?? 0, frees = body.u64(at: c + 8) ?? 0
            let allocBytes = cycleHasBytes ? body.u64(at: c + 16) ?? 0 : allocs &* size
            let freeBytes = cycleHasBytes ? body.u64(at: c + 24) ?? 0 : frees &* size
            records.append(HeapProfileRecord(stack: stack, size: size, allocObjects: allocs, freeObjects: frees,
                                             allocBytes: allocBytes, freeBytes: freeBytes))
            next = UInt64(bitPattern: header.allnext.value(in: h) ?? 0)
        }
        return (rate, records)
    }
}
