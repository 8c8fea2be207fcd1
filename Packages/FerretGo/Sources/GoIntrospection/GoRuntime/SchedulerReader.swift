import Glibc
import Synchronization

/// The Go scheduler's figures for one process, as the runtime itself computes them.
public struct SchedulerSnapshot: Sendable, Equatable {
    /// What `runtime.NumGoroutine` returns: `runtime.gcount`, i.e.
    /// allglen − free Gs on the global list − system goroutines (sched.ngsys) − free Gs
    /// on every P's list. Free-list counts are `gFree.n` up to Go 1.24 and the lists'
    /// `size` fields from Go 1.25. Like gcount, never below 1.
    public var goroutines: Int
    /// Ms the runtime has created and not freed: `sched.mnext − sched.nmfreed`
    /// (`runtime.mcount`, what `GODEBUG=schedtrace` prints as threads=). Includes
    /// the idle extra Ms a cgo program keeps for callbacks from C threads, which have
    /// no OS thread (see ``idleExtraThreads`` and ``osThreads``).
    public var threads: Int
    /// Parked Ms: `sched.nmidle` (schedtrace idlethreads=).
    public var idleThreads: Int
    /// Ms spinning for work: `sched.nmspinning` (schedtrace spinningthreads=).
    public var spinningThreads: Int
    /// GOMAXPROCS: `runtime.gomaxprocs`.
    public var procs: Int
    /// Idle Ps: `sched.npidle` (schedtrace idleprocs=).
    public var idleProcs: Int
    /// Goroutines in the global run queue: `sched.runqsize` (Go 1.25+: `sched.runq.size`).
    public var globalRunQueue: Int
    /// What `runtime.NumCgoCall` returns: `ncgocall` + Σ `m.ncgocall` over `allm`
    /// (linked by `m.alllink`).
    public var cgoCalls: UInt64
    /// Extra Ms waiting on the runtime's extra-M list (`runtime.extraMCount` up to
    /// Go 1.20, `runtime.extraMLength` after): created for cgo callbacks, counted by
    /// ``threads``, but with no OS thread. Nil when the binary has neither global.
    public var idleExtraThreads: Int?

    public init(goroutines: Int, threads: Int, idleThreads: Int, spinningThreads: Int, procs: Int,
                idleProcs: Int, globalRunQueue: Int, cgoCalls: UInt64, idleExtraThreads: Int? = nil) {
        self.goroutines = goroutines
        self.threads = threads
        self.idleThreads = idleThreads
        self.spinningThreads = spinningThreads
        self.procs = procs
        self.idleProcs = idleProcs
        self.globalRunQueue = globalRunQueue
        self.cgoCalls = cgoCalls
        self.idleExtraThreads = idleExtraThreads
    }

    /// The Ms that are OS threads: ``threads`` − ``idleExtraThreads``; what
    /// /proc/PID/status Threads: shows for a Go program whose C code starts no
    /// threads of its own. Nil when ``idleExtraThreads`` is unknown.
    public var osThreads: Int? { idleExtraThreads.map { threads - $0 } }
}

/// Reads the Go scheduler's state of a running process from outside it:
/// `process_vm_readv` only, never a stop, never a write.
///
/// `init` resolves everything that does not change while the process runs (the
/// globals' addresses with the load bias applied, the field offsets for the
/// binary's Go version); `read` then costs, in the steady state, two system calls:
/// one batch with every global and `sched` field plus, speculatively, the `allp`
/// array, each P's free-G count and each M's cgo-call count at the addresses seen
/// last time (validated against the fresh `allp` header and `allm` chain, re-read
/// where they changed), and one batch re-reading the cheap counters for coherence.
///
/// Coherence: the figures race with the running program (the runtime itself reads
/// them without a lock). `read` takes a full reading, then re-reads the counters
/// the goroutine and thread counts are computed from (`sched.mnext`,
/// `sched.nmfreed`, `sched.ngsys`, the global free-G count, `allglen`, each P's
/// free-G count); if any changed in between, the reading may be torn and is taken
/// again, up to 3 attempts. If the program keeps changing them (a goroutine
/// storm), the last reading is returned: like `runtime.NumGoroutine` itself, it is
/// then a momentary value, not a torn one beyond what the runtime's own lock-free
/// reads allow.
public final class SchedulerReader: Sendable {
    public let pid: Int32
    public let goVersion: String
    /// Where the struct layouts came from: "dwarf", "table", "table (nearest patch …)".
    public let layoutSource: String
    /// Added to link-time addresses (0 unless the binary is PIE).
    public let loadBias: UInt64

    let memory: ProcessMemory
    let plan: Plan
    let cache = Mutex(Cache())

    /// Upper bound on the allm walk and on allp's length (the runtime's own limits are
    /// 10000 Ms by default and GOMAXPROCS ≤ 1<<20 / in practice the CPU count).
    static let maxMs = 100_000
    static let maxProcs = 1 << 16
    static let maxAttempts = 3

    typealias Global = RuntimeGlobalAddresses.Global

    struct Plan {
        var sched: UInt64
        var allglen: Global
        var allp: Global
        var allm: Global
        var ncgocall: Global
        var gomaxprocs: Global
        var extraM: Global?
        /// Built with CGO_ENABLED=0: no extra Ms.
        var noCgo: Bool
        var mnext, nmfreed, nmidle, nmspinning, npidle, ngsys, runqsize: RuntimeField
        var schedGFree: [RuntimeField]
        var pGFree: RuntimeField
        var mNcgocall, mAlllink: RuntimeField
    }

    struct Cache {
        var allpPtr: UInt64 = 0
        var allpLen: Int = 0
        var ps: [UInt64] = []
        var ms: [UInt64] = []
    }

    /// Prepares reading `pid` (whose executable is `binary`). Throws a one-line reason
    /// when the process cannot be read: "not a Go program", "go1.22.10 stripped: runtime
    /// globals unavailable", "unknown layout for go1.20", "… field runtime.schedt.X not
    /// in the layout".
    public convenience init(pid: Int32, binary: GoBinary) throws {
        try self.init(pid: pid, binary: binary, layouts: .automatic)
    }

    /// Where the reader takes struct layouts from.
    public enum LayoutChoice: Sendable {
        /// The binary's DWARF when it has it, else the built-in table.
        case automatic
        /// The built-in table only (what a stripped binary gets; tests use it to
        /// check the table against live processes).
        case tableOnly
    }

    /// Like ``init(pid:binary:)``, choosing where the layouts come from.
    public convenience init(pid: Int32, binary: GoBinary, layouts: LayoutChoice) throws {
        try self.init(pid: pid, binary: binary, layouts: layouts, given: nil)
    }

    /// `given`: read through these globals (link-time addresses) and load bias,
    /// unchecked; the validator's own reading.
    init(pid: Int32, binary: GoBinary, layouts: LayoutChoice, given: (globals: [RuntimeGlobal], bias: UInt64)? = nil) throws {
        let globals: RuntimeGlobalAddresses
        if let given {
            globals = try RuntimeGlobalAddresses(version: binary.goVersion ?? "?", bias: given.bias, globals: given.globals,
                                                 required: Self.requiredGlobals)
        } else {
            globals = try RuntimeGlobalAddresses(pid: pid, binary: binary, required: Self.requiredGlobals,
                                                 optional: Self.optionalGlobals)
        }
        let prepared = try Self.prepare(binary: binary, layouts: layouts, globals: globals)
        self.pid = pid
        goVersion = prepared.version
        layoutSource = prepared.source
        loadBias = prepared.bias
        plan = prepared.plan
        memory = ProcessMemory(pid: pid)
    }

    static let requiredGlobals = ["runtime.sched", "runtime.allglen", "runtime.allp", "runtime.allm", "runtime.ncgocall",
                                  "runtime.gomaxprocs"]
    static let optionalGlobals = ["runtime.extraMLength", "runtime.extraMCount"]

    private static func prepare(binary: GoBinary, layouts: LayoutChoice, globals: RuntimeGlobalAddresses) throws
        -> (version: String, source: String, bias: UInt64, plan: Plan)
    {
        let version = globals.version
        defer { binary.releaseDWARF() }

        // Layouts: the binary's DWARF, else the table row for its Go version.
        let fields = RuntimeFieldResolver(goVersion: version, dwarf: layouts == .automatic ? binary.dwarf : nil)
        for t in ["runtime.schedt", "runtime.p", "runtime.m"] where fields.layout(of: t) == nil {
            throw IntrospectionError(fields.missingLayoutReason(t), kind: .unknownLayout)
        }
        let source = fields.source(of: "runtime.schedt") ?? "?"
        let s = "runtime.schedt"
        let schedGFree: [RuntimeField]
        if fields.has("gFree.n", in: s) {
            schedGFree = [try fields.field("gFree.n", in: s)]                       // Go <= 1.24
        } else {
            schedGFree = [try fields.field("gFree.stack.size", in: s),              // Go 1.25+
                          try fields.field("gFree.noStack.size", in: s)]
        }
        let runq = try fields.field(fields.has("runqsize", in: s) ? "runqsize" : "runq.size", in: s)
        let pFree = try fields.field(fields.has("gFree.n", in: "runtime.p") ? "gFree.n" : "gFree.size",
                                     in: "runtime.p")

        var extra: Global?
        // A build without cgo never makes extra Ms (they serve callbacks from C
        // threads): the count is 0 by construction and is not read.
        let noCgo = binary.buildInfo?.setting("CGO_ENABLED") == "0"
        for n in ["runtime.extraMLength", "runtime.extraMCount"] where globals.has(n) && !noCgo {
            extra = try globals.global(n, sizes: [4, 8])
            break
        }
        let plan = Plan(
            sched: try globals.global("runtime.sched").address,
            allglen: try globals.global("runtime.allglen", sizes: [8]),
            allp: try globals.global("runtime.allp", sizes: [24]),
            allm: try globals.global("runtime.allm", sizes: [8]),
            ncgocall: try globals.global("runtime.ncgocall", sizes: [8]),
            gomaxprocs: try globals.global("runtime.gomaxprocs", sizes: [4, 8]),
            extraM: extra,
            noCgo: noCgo,
            mnext: try fields.field("mnext", in: s),
            nmfreed: try fields.field("nmfreed", in: s),
            nmidle: try fields.field("nmidle", in: s),
            nmspinning: try fields.field("nmspinning", in: s),
            npidle: try fields.field("npidle", in: s),
            ngsys: try fields.field("ngsys", in: s),
            runqsize: runq,
            schedGFree: schedGFree,
            pGFree: pFree,
            mNcgocall: try fields.field("ncgocall", in: "runtime.m"),
            mAlllink: try fields.field("alllink", in: "runtime.m"))
        return (version, source, globals.bias, plan)
    }

    /// The fields this reader reads, for diagnostics ("runtime.schedt.mnext@48:i64", ...).
    public var fieldDescriptions: [String] {
        let p = plan
        return ([p.mnext, p.nmfreed, p.nmidle, p.nmspinning, p.npidle, p.ngsys, p.runqsize] + p.schedGFree
            + [p.pGFree, p.mNcgocall, p.mAlllink]).map(\.description)
    }
}
