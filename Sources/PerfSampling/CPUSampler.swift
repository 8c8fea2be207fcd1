// The sampling engine of the CPU profiler (issue #5): perf CPU-clock samples
// with callchains from every thread of the attached processes, drained from
// the kernel's ring buffers by one thread of our own.
//
// Events: PERF_TYPE_SOFTWARE / PERF_COUNT_SW_CPU_CLOCK in frequency mode, per
// (thread, online CPU) with inherit (see Attachment.swift for why, and what
// was verified). Each process has one ring per CPU, `ringPages` data pages.
//
// The drain thread is described in Engine.swift.
import CLinuxSupport
import Foundation
import LinuxProcess

/// One sample: where a thread was when its CPU clock ticked.
public struct CPUSample: Sendable, Equatable {
    public var pid: Int32
    public var tid: Int32
    /// CLOCK_MONOTONIC, ns (the events set use_clockid; compare with clock_gettime(CLOCK_MONOTONIC)).
    public var timeNanos: UInt64
    /// CPU time this sample stands for, ns (1e9 / frequency for the CPU clock).
    public var periodNanos: UInt64
    /// Leaf first: the user-mode IP, then return addresses (frame-pointer walk
    /// by the kernel). When the sample hit in the kernel, this is where the
    /// thread entered it. Empty if the kernel could not read a user stack.
    public var userStack: [UInt64]
    /// Leaf first; empty unless `includeKernel`.
    public var kernelStack: [UInt64]
    /// With a stack copy (`stackBytes` > 0): the user registers when the
    /// sample was taken (at kernel entry when it hit in the kernel).
    public var userRegisters: UserRegisters?
    /// With a stack copy: the top of the user stack, from `userRegisters.sp` up.
    public var userStackCopy: [UInt8]

    public init(pid: Int32, tid: Int32, timeNanos: UInt64, periodNanos: UInt64, userStack: [UInt64], kernelStack: [UInt64],
                userRegisters: UserRegisters? = nil, userStackCopy: [UInt8] = []) {
        self.pid = pid
        self.tid = tid
        self.timeNanos = timeNanos
        self.periodNanos = periodNanos
        self.userStack = userStack
        self.kernelStack = kernelStack
        self.userRegisters = userRegisters
        self.userStackCopy = userStackCopy
    }
}

/// The user-mode registers a stack unwinder starts from (x86-64).
public struct UserRegisters: Sendable, Equatable {
    public var ip: UInt64
    public var sp: UInt64
    public var bp: UInt64
    public init(ip: UInt64, sp: UInt64, bp: UInt64) {
        self.ip = ip
        self.sp = sp
        self.bp = bp
    }
}

/// Counters for one attached process, since attach.
public struct SamplerStats: Sendable, Equatable {
    /// Samples delivered.
    public var samples: UInt64 = 0
    /// Samples the kernel dropped because a ring was full (PERF_RECORD_LOST).
    public var lost: UInt64 = 0
    /// PERF_RECORD_THROTTLE / _UNTHROTTLE records (the kernel capping the sample rate).
    public var throttled: UInt64 = 0
    public var unthrottled: UInt64 = 0
    /// Ring buffers mapped (one per online CPU).
    public var rings: Int = 0
    /// Descriptors held: one event per (thread at attach, CPU), plus the pidfd.
    public var fds: Int = 0
    /// Attach passes it took (more than 1 when threads appeared during attach).
    public var attachAttempts: Int = 0
    /// Records skipped: of types not requested, or that did not parse.
    public var otherRecords: UInt64 = 0

    public init() {}
}

/// Samples the CPU of whole processes. Thread-safe. Callbacks run on the
/// sampler's drain thread (or on the thread calling `stop`/`shutdown`, for
/// the last samples), one at a time, never concurrently.
public final class CPUSampler: @unchecked Sendable {
    public static let frequencyRange = 1...1000
    /// The callchain depth asked of the kernel (kernel.perf_event_max_stack caps it).
    public static let maxStack = 127
    /// Stack copy sizes `start` accepts (0 turns the copy off).
    public static let stackBytesRange = 0...32768

    public let frequencyHz: Int
    public let includeKernel: Bool
    public let ringPages: Int
    public let stackBytes: Int
    private let engine: Engine

    /// - Parameters:
    ///   - frequencyHz: samples per second of each thread's CPU time, 1...1000
    ///     (checked by `start`).
    ///   - includeKernel: also record kernel frames.
    ///   - ringPages: data pages per ring, a power of two, 1...1024 (checked by `start`).
    ///   - stackBytes: bytes of each thread's user stack (from SP up) copied with
    ///     each sample, with its IP, SP and BP: a multiple of 8 in `stackBytesRange`
    ///     (checked by `start`); 0 for none. x86-64 only. Each sample's record
    ///     grows by about this much, so rings fill that much sooner.
    ///   - onSamples: every batch of samples drained (any processes).
    ///   - onLost: (pid, samples the kernel dropped since the last call) when > 0.
    ///   - onDetach: (pid, final stats) when a process that exited has been
    ///     released (not after `stop`).
    public init(frequencyHz: Int = 99, includeKernel: Bool = false, ringPages: Int = 16, stackBytes: Int = 0,
                onSamples: @escaping @Sendable ([CPUSample]) -> Void,
                onLost: (@Sendable (Int32, UInt64) -> Void)? = nil,
                onDetach: (@Sendable (Int32, SamplerStats) -> Void)? = nil) {
        self.frequencyHz = frequencyHz
        self.includeKernel = includeKernel
        self.ringPages = ringPages
        self.stackBytes = stackBytes
        engine = Engine(onSamples: onSamples, onLost: onLost, onDetach: onDetach)
    }

    deinit { engine.shutdown() }

    /// Starts sampling every thread of `pid`, and every thread they create
    /// later (not child processes). Does nothing if `pid` is already sampled.
    /// Whether a ring of `ringPages` pages holds at least two samples carrying a
    /// `stackBytes`-byte stack copy (always, without a copy).
    public static func ringHoldsTwoSamples(ringPages: Int, stackBytes: Int) -> Bool {
        stackBytes == 0 || 2 * stackBytes <= ringPages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    public func start(pid: Int32) throws(SamplerError) {
        guard Self.frequencyRange.contains(frequencyHz) else {
            throw .invalidConfiguration(pid: pid, "frequencyHz \(frequencyHz) is outside \(Self.frequencyRange)")
        }
        guard (1...1024).contains(ringPages), ringPages & (ringPages - 1) == 0 else {
            throw .invalidConfiguration(pid: pid, "ringPages \(ringPages) is not a power of two in 1...1024")
        }
        guard Self.stackBytesRange.contains(stackBytes), stackBytes % 8 == 0 else {
            throw .invalidConfiguration(pid: pid, "stackBytes \(stackBytes) is not a multiple of 8 in \(Self.stackBytesRange)")
        }
        let dataBytes = UInt32(ringPages) * UInt32(sysconf(Int32(_SC_PAGESIZE)))
        guard Self.ringHoldsTwoSamples(ringPages: ringPages, stackBytes: stackBytes) else {
            throw .invalidConfiguration(pid: pid, "a ring of \(ringPages) pages holds fewer than 2 samples with a \(stackBytes)-byte stack copy")
        }
        let settings = Attachment.Settings(
            frequencyHz: UInt32(frequencyHz), includeKernel: includeKernel,
            maxStack: UInt16(min(Self.maxStack, Engine.kernelMaxStack)),
            dataPages: UInt32(ringPages), wakeupBytes: dataBytes / 2, maxAttempts: 8, stackBytes: UInt32(stackBytes))
        try engine.start(pid: pid, settings: settings, afterListing: attachHook)
    }

    /// Stops sampling `pid` and releases its events and rings. Samples still
    /// in its rings are delivered first (before `stop` returns; when called
    /// from a callback, right after that callback returns); it waits for a
    /// callback running on the drain thread to return. No-op if not sampled.
    public func stop(pid: Int32) { engine.stop(pid: pid) }

    /// Counters for `pid`, or nil when it is not sampled (never attached,
    /// stopped, or exited and released).
    public func stats(pid: Int32) -> SamplerStats? { engine.stats(pid: pid) }

    /// Pids being sampled.
    public var pids: [Int32] { engine.pids }

    /// Stops every process (delivering their last samples) and the drain
    /// thread. Idempotent; `start` throws afterwards.
    public func shutdown() { engine.shutdown() }

    /// Test hook: runs after each first reading of a process's thread list during attach.
    var attachHook: ((Int) -> Void)?

    /// Times the drain thread has woken up (epoll events or timeouts).
    var drainWakeups: Int { engine.wakeups }
}
