import Glibc
import Synchronization

/// The Go heap's figures for one process, computed the way `runtime.ReadMemStats`
/// computes them (runtime/mstats.go, `readmemstats_m`), from the same sources:
/// the pacer's atomic counters (`gcController`), the consistent per-P heap stats
/// (`memstats.heapStats`), the fixed allocators (`mheap_`) and `memstats`' own
/// fields. Names in the comments are `runtime.MemStats` fields.
public struct HeapSnapshot: Sendable, Equatable {
    /// HeapInuse: bytes in in-use spans (`gcController.heapInUse`).
    public var heapInUse: UInt64
    /// Bytes in free spans not yet returned to the OS (`gcController.heapFree`).
    public var heapFree: UInt64
    /// HeapReleased: bytes of free spans returned to the OS (`gcController.heapReleased`).
    public var heapReleased: UInt64
    /// HeapObjects: live plus unswept objects: Σ allocations − Σ frees over the
    /// consistent stats, plus what each P's mcache allocated from its cached spans
    /// and has not yet published (`allocCount − allocCountBeforeCache`, which
    /// ReadMemStats publishes by flushing the mcaches first).
    public var heapObjects: UInt64
    /// Bytes marked live by the last GC plus allocated since (`gcController.heapLive`).
    public var heapLive: UInt64
    /// Bytes marked live by the last GC (`gcController.heapMarked`).
    public var heapMarked: UInt64
    /// StackInuse: bytes in stack spans (consistent stats `inStacks`).
    public var stackInUse: UInt64
    /// StackSys: StackInuse + OS-allocated stack memory (`memstats.stacks_sys`).
    public var stackSys: UInt64
    /// MSpanInuse / MSpanSys: mspan structures (`mheap_.spanalloc.inuse`, `memstats.mspan_sys`).
    public var mspanInUse: UInt64
    public var mspanSys: UInt64
    /// MCacheInuse / MCacheSys: mcache structures.
    public var mcacheInUse: UInt64
    public var mcacheSys: UInt64
    /// BuckHashSys: profiling bucket hash tables.
    public var buckHashSys: UInt64
    /// GCSys: GC metadata (`gcMiscSys` + work buffers + pointer/scalar bits where tracked).
    public var gcSys: UInt64
    /// OtherSys: other off-heap runtime allocations.
    public var otherSys: UInt64
    /// Sys: all memory obtained from the OS, as ReadMemStats sums it.
    public var sys: UInt64
    /// NextGC: the heap goal (`gcController.heapGoal()`, recomputed here from its inputs).
    public var nextGC: UInt64
    /// NumGC: completed GC cycles.
    public var numGC: UInt32
    /// PauseTotalNs: cumulative stop-the-world pause time.
    public var pauseTotalNs: UInt64
    /// The runtime's cumulative GC CPU time in ns: `work.cpuStats.gcTotalTime` (Go 1.21+,
    /// what runtime/metrics reports as /cpu/classes/gc/total:cpu-seconds) or
    /// `work.totaltime` (Go 1.19, what MemStats.GCCPUFraction is computed from; it
    /// leaves out idle-priority mark work). Both advance when a GC cycle ends.
    public var gcCPUTimeNs: Int64
    /// The CPU time available to Go code so far, in ns: GOMAXPROCS × wall time,
    /// integrated over GOMAXPROCS changes (`sched.totaltime + (now −
    /// sched.procresizetime) × gomaxprocs`, the runtime's /cpu/classes/total).
    public var totalCPUTimeNs: Int64
    /// The runtime's own total at the end of the last GC cycle
    /// (`work.cpuStats.totalTime`, Go 1.21+; nil before): the denominator
    /// runtime/metrics reports, which advances with `gcCPUTimeNs`.
    public var gcAccountedTotalNs: Int64?

    /// HeapIdle: free spans, returned to the OS or not.
    public var heapIdle: UInt64 { heapFree &+ heapReleased }
    /// HeapSys: heap address space obtained from the OS.
    public var heapSys: UInt64 { heapInUse &+ heapFree &+ heapReleased }
    /// HeapSys − HeapReleased: heap memory that is backed (committed).
    public var heapCommitted: UInt64 { heapInUse &+ heapFree }
    /// Runtime structures outside the heap that are in use.
    public var offHeapUsed: UInt64 { mspanInUse &+ mcacheInUse &+ buckHashSys &+ gcSys &+ otherSys }
    /// Memory obtained from the OS for runtime structures outside the heap.
    public var offHeapCommitted: UInt64 { mspanSys &+ mcacheSys &+ buckHashSys &+ gcSys &+ otherSys }

    /// The share of the available CPU time (GOMAXPROCS × wall time) spent in GC
    /// between two readings of the same process, 0…1; nil when no time passed.
    ///
    /// The runtime adds GC time when a cycle ends. Where it also records the
    /// total at that moment (Go 1.21+), the fraction is taken between the GC ends
    /// the two readings saw, exactly as runtime/metrics' two counters give it;
    /// when no cycle ended in between, it is 0. Before Go 1.21 the denominator is
    /// the available CPU time between the two readings.
    public static func gcCPUFraction(from a: HeapSnapshot, to b: HeapSnapshot) -> Double? {
        if let ta = a.gcAccountedTotalNs, let tb = b.gcAccountedTotalNs {
            if b.gcCPUTimeNs == a.gcCPUTimeNs || tb <= ta {
                return b.totalCPUTimeNs > a.totalCPUTimeNs ? 0 : nil
            }
            return min(1, max(0, Double(b.gcCPUTimeNs - a.gcCPUTimeNs) / Double(tb - ta)))
        }
        let total = b.totalCPUTimeNs - a.totalCPUTimeNs
        guard total > 0 else { return nil }
        let gc = max(0, b.gcCPUTimeNs - a.gcCPUTimeNs)
        return min(1, Double(gc) / Double(total))
    }
}

/// Reads the Go heap's state of a running process from outside it:
/// `process_vm_readv` only, never a stop, never a write.
///
/// A reading takes three batched system calls in the steady state: the globals
/// (with, at the addresses seen last time, the Ps' stats sequence numbers, their
/// mcache pointers and the mcaches' span arrays), the cached spans' counts, and
/// a re-read of the consistent stats and the sequence numbers for coherence.
///
/// Coherence: the consistent heap stats are written by each P between two
/// increments of its `statsSeq` (odd while writing), into the slot `gen` names;
/// `runtime/metrics.Read` rotates `gen` and folds the older slots together. A
/// reading is accepted when every P's sequence number was even and unchanged from
/// before the stats were read until after the cached spans were, `gen` did not
/// move, and the slots not being written are unchanged on a re-read; else it is
/// taken again, up to ``maxAttempts`` times with a growing pause in between. When the program never leaves a
/// quiet moment, ``read()`` throws ``IntrospectionError`` saying so rather than
/// return a torn figure. (Writers without a P, rare, take a lock we cannot
/// observe; their updates are small.)
public final class HeapReader: Sendable {
    public let pid: Int32
    public let goVersion: String
    /// Where the struct layouts came from: "dwarf", "table", "table (nearest patch …)".
    public let layoutSource: String

    let memory: ProcessMemory
    let plan: Plan
    let cache = Mutex(Cache())

    static let maxProcs = 1 << 16
    public static let maxAttempts = 16

    typealias Global = RuntimeGlobalAddresses.Global

    struct Plan {
        var memstats: UInt64
        var gcController: UInt64
        var mheap: UInt64
        var work: UInt64
        var sched: UInt64
        var gomaxprocs: Global
        var allp: Global
        /// memstats.heapStats: the stats array and gen, read as one region.
        var statsRegion: (offset: Int, size: Int)
        var statsSlot: Int          // size of one heapStatsDelta
        var gen: RuntimeField       // relative to the region's start
        var inStacks, inWorkBufs: RuntimeField
        var inPtrScalarBits: RuntimeField?
        var largeAllocCount, largeFreeCount: RuntimeField
        var smallAllocCount, smallFreeCount: (offset: Int, count: Int)
        var memstatsFields: [RuntimeField] // stacks, mspan, mcache, buckhash, gcMisc, other sys; pause total; numgc
        var controller: [RuntimeField]    // see ControllerIndex
        var spanallocInuse, cacheallocInuse: RuntimeField
        var gcCPU: RuntimeField
        var gcAccountedTotal: RuntimeField?
        var schedTotaltime, schedProcresizetime: RuntimeField
        var pStatsSeq, pMcache: RuntimeField
        var mcacheAlloc: (offset: Int, count: Int)
        var spanAllocCount, spanAllocCountBeforeCache: RuntimeField
        /// Go 1.21+: the heap goal's memory-limit headroom is 3% (at least 1 MiB); 1.19: 1 MiB.
        var headroomPercent: Bool
    }

    enum ControllerIndex: Int, CaseIterable {
        case heapInUse, heapFree, heapReleased, heapLive, heapMarked, gcPercentHeapGoal, sweepDistMinTrigger,
             triggered, memoryLimit, mappedReady, totalAlloc, totalFree
        var path: String {
            switch self {
            case .heapInUse: "heapInUse"
            case .heapFree: "heapFree"
            case .heapReleased: "heapReleased"
            case .heapLive: "heapLive"
            case .heapMarked: "heapMarked"
            case .gcPercentHeapGoal: "gcPercentHeapGoal"
            case .sweepDistMinTrigger: "sweepDistMinTrigger"
            case .triggered: "triggered"
            case .memoryLimit: "memoryLimit"
            case .mappedReady: "mappedReady"
            case .totalAlloc: "totalAlloc"
            case .totalFree: "totalFree"
            }
        }
    }

    struct Cache {
        var allpPtr: UInt64 = 0
        var allpLen: Int = 0
        var ps: [UInt64] = []
        var mcaches: [UInt64] = []
    }

    /// Prepares reading `pid` (whose executable is `binary`). Throws a one-line reason
    /// when the process cannot be read, like ``SchedulerReader``.
    public convenience init(pid: Int32, binary: GoBinary) throws {
        try self.init(pid: pid, binary: binary, layouts: .automatic)
    }

    public init(pid: Int32, binary: GoBinary, layouts: SchedulerReader.LayoutChoice) throws {
        let globals = try RuntimeGlobalAddresses(
            pid: pid, binary: binary,
            required: ["runtime.memstats", "runtime.gcController", "runtime.mheap_", "runtime.work", "runtime.sched",
                       "runtime.gomaxprocs", "runtime.allp"])
        let version = globals.version
        defer { binary.releaseDWARF() }
        let f = RuntimeFieldResolver(goVersion: version, dwarf: layouts == .automatic ? binary.dwarf : nil)
        for t in ["runtime.mstats", "runtime.gcControllerState", "runtime.heapStatsDelta", "runtime.mheap",
                  "runtime.workType", "runtime.schedt", "runtime.p", "runtime.mcache", "runtime.mspan"]
            where f.layout(of: t) == nil {
            throw IntrospectionError(f.missingLayoutReason(t), kind: .unknownLayout)
        }
        let ms = "runtime.mstats", d = "runtime.heapStatsDelta", gc = "runtime.gcControllerState"

        // The consistent stats: [3]heapStatsDelta followed by gen.
        let stats = try f.array("heapStats.stats", in: ms)
        guard stats.count == 3 else {
            throw IntrospectionError("\(version): memstats.heapStats.stats has \(stats.count) slots, not 3")
        }
        let genAbs = try f.field("heapStats.gen", in: ms)
        let regionEnd = genAbs.offset + genAbs.size
        guard genAbs.offset >= stats.offset + 3 * stats.elementSize else {
            throw IntrospectionError("\(version): memstats.heapStats.gen precedes its stats")
        }
        let region = (offset: stats.offset, size: regionEnd - stats.offset)
        let gen = RuntimeField(name: genAbs.name, offset: genAbs.offset - stats.offset, size: genAbs.size,
                               signed: false)
        let small = try f.array("smallAllocCount", in: d)
        let smallFree = try f.array("smallFreeCount", in: d)
        guard small.elementSize == 8, smallFree.elementSize == 8, small.count == smallFree.count else {
            throw IntrospectionError("\(version): heapStatsDelta size-class arrays are not [N]uint64")
        }

        let memstatsFields = try ["stacks_sys", "mspan_sys", "mcache_sys", "buckhash_sys", "gcMiscSys", "other_sys",
                                  "pause_total_ns", "numgc"].map { try f.field($0, in: ms) }
        let controller = try ControllerIndex.allCases.map { try f.field($0.path, in: gc) }
        let w = "runtime.workType"
        let gcCPU: RuntimeField
        if f.has("cpuStats.gcTotalTime", in: w) {
            gcCPU = try f.field("cpuStats.gcTotalTime", in: w)          // Go 1.21-1.22
        } else if f.has("cpuStats.GCTotalTime", in: w) {
            gcCPU = try f.field("cpuStats.GCTotalTime", in: w)          // Go 1.23+
        } else {
            gcCPU = try f.field("totaltime", in: w)                     // Go 1.19-1.20
        }
        let accounted: RuntimeField? = f.has("cpuStats.totalTime", in: w) ? try f.field("cpuStats.totalTime", in: w)
            : f.has("cpuStats.TotalTime", in: w) ? try f.field("cpuStats.TotalTime", in: w) : nil
        let alloc = try f.array("alloc", in: "runtime.mcache")
        guard alloc.elementSize == 8 else { throw IntrospectionError("\(version): mcache.alloc is not [N]*mspan") }
        let minor = GoVersion(version)?.minor ?? 0

        plan = Plan(
            memstats: try globals.global("runtime.memstats", minSize: regionEnd).address,
            gcController: try globals.global("runtime.gcController").address,
            mheap: try globals.global("runtime.mheap_").address,
            work: try globals.global("runtime.work").address,
            sched: try globals.global("runtime.sched").address,
            gomaxprocs: try globals.global("runtime.gomaxprocs", sizes: [4, 8]),
            allp: try globals.global("runtime.allp", sizes: [24]),
            statsRegion: region,
            statsSlot: stats.elementSize,
            gen: gen,
            inStacks: try f.field("inStacks", in: d),
            inWorkBufs: try f.field("inWorkBufs", in: d),
            inPtrScalarBits: f.has("inPtrScalarBits", in: d) ? try f.field("inPtrScalarBits", in: d) : nil,
            largeAllocCount: try f.field("largeAllocCount", in: d),
            largeFreeCount: try f.field("largeFreeCount", in: d),
            smallAllocCount: (small.offset, small.count),
            smallFreeCount: (smallFree.offset, smallFree.count),
            memstatsFields: memstatsFields,
            controller: controller,
            spanallocInuse: try f.field("spanalloc.inuse", in: "runtime.mheap"),
            cacheallocInuse: try f.field("cachealloc.inuse", in: "runtime.mheap"),
            gcCPU: gcCPU,
            gcAccountedTotal: accounted,
            schedTotaltime: try f.field("totaltime", in: "runtime.schedt"),
            schedProcresizetime: try f.field("procresizetime", in: "runtime.schedt"),
            pStatsSeq: try f.field("statsSeq", in: "runtime.p"),
            pMcache: try f.field("mcache", in: "runtime.p"),
            mcacheAlloc: (alloc.offset, alloc.count),
            spanAllocCount: try f.field("allocCount", in: "runtime.mspan"),
            spanAllocCountBeforeCache: try f.field("allocCountBeforeCache", in: "runtime.mspan"),
            headroomPercent: minor >= 21)
        self.pid = pid
        goVersion = version
        layoutSource = f.source(of: "runtime.mstats") ?? "?"
        memory = ProcessMemory(pid: pid)
    }
}
