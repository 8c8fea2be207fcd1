import GoBinaryFormat
import Glibc

/// One goroutine as the census read it from outside the process.
public struct GoroutineRecord: Sendable, Equatable {
    public enum StackState: String, Sendable {
        /// Unwound from `g.sched` (parked, runnable) or `g.syscallsp` (in a syscall).
        case read
        /// Running: its registers are on a CPU, not in memory; only the start
        /// function and creation site are known.
        case running
        /// The goroutine changed while it was read, twice: nothing is guessed.
        case changed
        /// Stacks were not asked for (or there is no saved context to start from).
        case skipped
        /// The census's stack budget (``GoroutineCensus/Options/stackBudget``) ran out first.
        case budget
        /// The walk ended before the outermost frame (an address that is not Go
        /// code, or the frame limit): what was found is kept.
        case truncated
    }

    public var goid: UInt64
    /// The creating goroutine (Go 1.21+: `g.parentGoid`); nil before.
    public var parentGoid: UInt64?
    /// `g.atomicstatus` without the scan bit.
    public var status: UInt32
    /// What the runtime's traceback header prints: the wait reason for a waiting
    /// goroutine that has one, else the status name ("running", "syscall", ...).
    public var state: String
    /// The status name alone ("waiting", "runnable", ...).
    public var statusName: String
    /// The wait reason's text, when the goroutine is waiting for one.
    public var waitReason: String?
    /// `g.waitsince` (the runtime's nanotime) when it is set, for waiting and
    /// syscall goroutines.
    public var waitSince: Int64
    /// Run-time PCs of `g.startpc` and `g.gopc`.
    public var startPC: UInt64
    public var creationPC: UInt64
    /// Left out of runtime.NumGoroutine and of the goroutine profile.
    public var isSystem: Bool
    public var lockedToThread: Bool
    /// Frame PCs (run time), innermost first, as the unwinder found them: the
    /// first is `sched.pc` (or `syscallpc`), the others return addresses.
    public var stack: [UInt64]
    public var stackState: StackState
}

/// One census: every goroutine read (sampled when there are more than the
/// configured maximum), and what it cost.
public struct GoroutineCensusResult: Sendable {
    public var goroutines: [GoroutineRecord]
    /// `allglen` at the start of the census (dead Gs included).
    public var allocatedGs: Int
    /// How many G structs were read (all of them unless sampled).
    public var readGs: Int
    /// True when the process had more Gs than `maxGoroutines`: every k-th was read.
    public var sampled: Bool
    /// Goroutines whose stack changed under the reader twice.
    public var changed: Int
    /// Bytes read from the process.
    public var bytesRead: Int
    /// The runtime's nanotime when the census was taken (CLOCK_MONOTONIC).
    public var nanotime: Int64

    /// What each goroutine read stands for: 1, or allocated / read when sampled
    /// (every k-th G read), to scale counts back to the whole.
    public var scale: Double { sampled && readGs > 0 ? Double(allocatedGs) / Double(readGs) : 1 }
}

/// Reads a Go program's goroutine table (`runtime.allgs`) from outside it:
/// `process_vm_readv` only, never a stop, never a write. For each goroutine:
/// goid, parent, status and wait reason (by the runtime's own tables,
/// GoroutineTables), how long it waits, start function and creation site, and,
/// when asked, its stack, unwound from `g.sched` or `g.syscallsp` with the
/// binary's pcsp tables as the runtime's own unwinder does. Written by hand: no
/// library reads a Go runtime's goroutines from outside.
///
/// Torn reads: a goroutine can run while it is read. Its G is read, then its
/// stack, then the G's status, goid and saved registers again; if they differ,
/// it is read once more, and if it changed again its stack is dropped
/// (`.changed`). Return addresses are only read inside the goroutine's stack
/// bounds (`g.stack.lo`..`g.stack.hi`), and only Go code is followed.
public final class GoroutineCensus: @unchecked Sendable {
    public let pid: Int32
    public let goVersion: String
    public let loadBias: UInt64
    public let tables: GoroutineTables
    public let pcln: PclnTable
    let memory: ProcessMemory
    let plan: Plan

    public struct Options: Sendable {
        /// Unwind stacks (the census without them reads only the G structs).
        public var stacks: Bool
        /// At most this many Gs are read; past it every k-th is (sampled).
        public var maxGoroutines: Int
        /// Bytes of stack read per goroutine at most.
        public var maxStackBytes: Int
        /// Bytes of stack read per census at most; past it stacks are skipped.
        public var stackBudget: Int
        /// Physical frames per stack at most.
        public var maxFrames: Int

        public init(stacks: Bool = true, maxGoroutines: Int = 200_000, maxStackBytes: Int = 64 << 10,
                    stackBudget: Int = 64 << 20, maxFrames: Int = 256) {
            self.stacks = stacks
            self.maxGoroutines = maxGoroutines
            self.maxStackBytes = maxStackBytes
            self.stackBudget = stackBudget
            self.maxFrames = maxFrames
        }
    }

    struct Plan {
        var allgs: UInt64       // the slice header: ptr, len, cap
        var allglen: UInt64
        var gSize: Int          // bytes of each G read (up to the last field used)
        var stackLo, stackHi, schedSP, schedPC, schedBP, syscallSP, syscallPC: RuntimeField
        var status, goid, waitsince, waitreason, startpc, gopc, lockedm: RuntimeField
        var parentGoid: RuntimeField?
        var runningCleanups: RuntimeField?
        var waiting, running, syscall, dead, deadExtra, runnable: UInt32?
        var scanBit: UInt32
    }

    /// Prepares the census of `pid` (running `binary`). Throws a one-line reason
    /// as the other readers do ("not a Go program", "unknown layout for go1.20", ...).
    public init(pid: Int32, binary: GoBinary) throws {
        let globals = try RuntimeGlobalAddresses(pid: pid, binary: binary, required: ["runtime.allgs", "runtime.allglen"])
        let version = globals.version
        guard let tables = GoroutineTables.forVersion(version) else {
            throw IntrospectionError("\(version): no goroutine state table (Go 1.19 or later)", kind: .unknownLayout)
        }
        let fields = RuntimeFieldResolver(goVersion: version, dwarf: binary.dwarf)
        defer { binary.releaseDWARF() }
        guard fields.layout(of: "runtime.g") != nil else {
            throw IntrospectionError(fields.missingLayoutReason("runtime.g"), kind: .unknownLayout)
        }
        let g = "runtime.g"
        let f = { (path: String) throws -> RuntimeField in try fields.field(path, in: g) }
        let optional = { (path: String) -> RuntimeField? in fields.has(path, in: g) ? try? fields.field(path, in: g) : nil }
        var plan = Plan(
            allgs: try globals.global("runtime.allgs", sizes: [24]).address,
            allglen: try globals.global("runtime.allglen", sizes: [8]).address,
            gSize: 0,
            stackLo: try f("stack.lo"), stackHi: try f("stack.hi"),
            schedSP: try f("sched.sp"), schedPC: try f("sched.pc"), schedBP: try f("sched.bp"),
            syscallSP: try f("syscallsp"), syscallPC: try f("syscallpc"),
            status: try f("atomicstatus"), goid: try f("goid"), waitsince: try f("waitsince"),
            waitreason: try f("waitreason"), startpc: try f("startpc"), gopc: try f("gopc"), lockedm: try f("lockedm"),
            parentGoid: optional("parentGoid"), runningCleanups: optional("runningCleanups"),
            waiting: tables.statuses["waiting"], running: tables.statuses["running"], syscall: tables.statuses["syscall"],
            dead: tables.statuses["dead"], deadExtra: tables.statuses["deadextra"], runnable: tables.statuses["runnable"],
            scanBit: tables.statuses["scan"] ?? 0x1000)
        let all = [plan.stackLo, plan.stackHi, plan.schedSP, plan.schedPC, plan.schedBP, plan.syscallSP, plan.syscallPC,
                   plan.status, plan.goid, plan.waitsince, plan.waitreason, plan.startpc, plan.gopc, plan.lockedm]
            + [plan.parentGoid, plan.runningCleanups].compactMap { $0 }
        plan.gSize = all.map { $0.offset + $0.size }.max() ?? 0
        self.pid = pid
        goVersion = version
        loadBias = globals.bias
        self.tables = tables
        pcln = try binary.pclnTable()
        memory = ProcessMemory(pid: pid)
        self.plan = plan
    }

    /// CLOCK_MONOTONIC in nanoseconds: the clock of the runtime's nanotime.
    public static func monotonicNow() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}
