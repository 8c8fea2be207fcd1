// cpu_profiler: always-on CPU sampling of the attached processes (perf
// CPU_CLOCK in frequency mode, user callchains, kernel frames optional), Go-aware
// symbolization (pclntab with inlined frames; ELF symbols for native code), one
// pprof profile per process per window, and a hotspot event per window.
import CPUProfiling
import FerretPluginKit
import Foundation
import GoIntrospection
import PerfSampling
import Synchronization

public final class CPUProfilerCollector: FerretCollector, @unchecked Sendable {
    public static let name = "cpu_profiler"
    public static let version = "0.1.0"
    public static let summary = "always-on CPU profiles (pprof) of every attached process, Go-aware, with hotspots"
    public static let mode = CollectionMode.push

    struct Options {
        var frequency = 99
        var windowNanos: UInt64 = 10_000_000_000
        var kernelFrames = false
        var hotspots = true
        var top = 10
        /// Default 32 with a stack copy (its records are ~4 KiB larger), else 16.
        var ringPages: Int?
        /// Bytes of user stack copied with each sample, for Go's unwind tables (0: off).
        /// The copy and its registers are x86-64 only.
        #if arch(x86_64)
        var stackCopy = 4096
        #else
        var stackCopy = 0
        #endif
        var effectiveRingPages: Int { ringPages ?? (stackCopy > 0 ? 32 : 16) }
    }

    private final class Target {
        let comm: String
        let assembler: ProfileAssembler
        var totalSamples: UInt64 = 0
        var totalLost: UInt64 = 0
        init(comm: String, assembler: ProfileAssembler) { self.comm = comm; self.assembler = assembler }
    }

    /// What the sampler's thread delivered and the worker has not taken yet.
    private struct Pending: Sendable {
        var samples: [CPUSample] = []
        var lost: UInt64 = 0
    }

    private let emit: Emitter
    private let settings: Options
    /// Filled by the sampler's callbacks; emptied by the worker and detach.
    private let pending = Mutex([Int32: Pending]())
    /// The attached processes; guarded by `workLock`, which also serializes the
    /// worker's per-process step with attach, detach and stop.
    private var targets: [Int32: Target] = [:]
    private let workLock = NSLock()
    private var sampler: CPUSampler?
    private var worker: Thread?
    private let running = Atomic<Bool>(false)
    private let workerDone = DispatchSemaphore(value: 0)

    /// The configuration keys as written (README.md, sample.yaml).
    public struct Settings: PluginSettings {
        var frequency: Int?
        var window: DurationSetting?
        var kernel_frames: Bool?
        var hotspots: Bool?
        var top: Int?
        var ring_pages: Int?
        var stack_copy: Int?

        public enum CodingKeys: String, CodingKey, CaseIterable {
            case frequency, window, kernel_frames, hotspots, top, ring_pages, stack_copy
        }

        /// The values in force: defaults filled in, every range checked.
        func options() throws -> Options {
            var o = Options()
            if let f = frequency {
                guard (1...1000).contains(f) else {
                    throw PluginError.invalidConfig("frequency must be an integer from 1 to 1000 (Hz), got \(f)", path: "/frequency")
                }
                o.frequency = f
            }
            if let w = window {
                guard w.nanoseconds >= 1_000_000_000 else {
                    throw PluginError.invalidConfig("window must be a duration of at least 1s (e.g. 10s, 1m)", path: "/window")
                }
                o.windowNanos = w.nanoseconds
            }
            if let b = kernel_frames { o.kernelFrames = b }
            if let b = hotspots { o.hotspots = b }
            if let n = top {
                guard (1...100).contains(n) else { throw PluginError.invalidConfig("top must be 1 to 100, got \(n)", path: "/top") }
                o.top = n
            }
            if let n = ring_pages {
                guard n >= 1, n <= 1024, n & (n - 1) == 0 else {
                    throw PluginError.invalidConfig("ring_pages must be a power of two from 1 to 1024, got \(n)", path: "/ring_pages")
                }
                o.ringPages = n
            }
            if let n = stack_copy {
                guard CPUSampler.stackBytesRange.contains(n), n % 8 == 0 else {
                    throw PluginError.invalidConfig(
                        "stack_copy must be a multiple of 8 from 0 to \(CPUSampler.stackBytesRange.upperBound) (bytes; 0 turns it off), got \(n)",
                        path: "/stack_copy")
                }
                #if !arch(x86_64)
                if n > 0 { throw PluginError.invalidConfig("stack_copy is x86-64 only; set it to 0 here", path: "/stack_copy") }
                #endif
                o.stackCopy = n
            }
            if !CPUSampler.ringHoldsTwoSamples(ringPages: o.effectiveRingPages, stackBytes: o.stackCopy) {
                throw PluginError.invalidConfig(
                    "ring_pages \(o.effectiveRingPages) holds fewer than 2 samples with stack_copy \(o.stackCopy); raise ring_pages",
                    path: "/ring_pages")
            }
            return o
        }

        public func check() throws { _ = try options() }
    }

    public init(context: PluginContext) throws {
        settings = try context.settings(Settings.self).options()
        emit = context.emit
    }

    public func start() throws {
        sampler = CPUSampler(
            frequencyHz: settings.frequency, includeKernel: settings.kernelFrames, ringPages: settings.effectiveRingPages,
            stackBytes: settings.stackCopy,
            onSamples: { [weak self] batch in self?.received(batch) },
            onLost: { [weak self] pid, n in self?.pending.withLock { $0[pid]?.lost &+= n } })
        running.store(true, ordering: .relaxed)
        let t = Thread { [weak self] in self?.loop() }
        t.name = "cpu_profiler"
        worker = t
        t.start()
    }

    public func stop() throws {
        running.store(false, ordering: .relaxed)
        if worker != nil { workerDone.wait() }
        worker = nil
        let pids = workLock.withLock { Array(targets.keys) }
        for pid in pids { try? detach(pid: pid) }
        sampler?.shutdown()
        sampler = nil
    }

    public func attach(_ target: PluginTarget) throws {
        let now = Self.unixNanos()
        let assembler: ProfileAssembler
        do {
            assembler = try ProfileAssembler(pid: target.pid, frequencyHz: settings.frequency,
                                             includeKernel: settings.kernelFrames, startUnixNanos: now)
        } catch {
            throw PluginError.failed("pid \(target.pid) (\(target.comm)): cannot read its mappings: \(error)")
        }
        workLock.withLock { targets[target.pid] = Target(comm: target.comm, assembler: assembler) }
        pending.withLock { $0[target.pid] = Pending() }
        do {
            guard let sampler else { throw PluginError.failed("cpu_profiler is not started") }
            try sampler.start(pid: target.pid)
        } catch {
            _ = workLock.withLock { targets.removeValue(forKey: target.pid) }
            _ = pending.withLock { $0.removeValue(forKey: target.pid) }
            throw PluginError.failed("pid \(target.pid) (\(target.comm)): cannot sample: \(error)")
        }
    }

    /// Stops sampling `pid` and emits its partial window (a process that exited
    /// mid-window still gets what was sampled).
    public func detach(pid: Int32) throws {
        sampler?.stop(pid: pid)
        workLock.lock()
        defer { workLock.unlock() }
        guard let t = targets.removeValue(forKey: pid) else {
            throw PluginError.failed("pid \(pid) is not attached")
        }
        feed(t, pending.withLock { $0.removeValue(forKey: pid) } ?? Pending())
        if t.assembler.samples > 0 { finishWindow(pid: pid, t, now: Self.unixNanos()) }
    }

    private func received(_ batch: [CPUSample]) {
        pending.withLock { all in
            for s in batch { all[s.pid]?.samples.append(s) }
        }
    }

    /// Takes what the sampler delivered for `pid` so far.
    private func take(_ pid: Int32) -> Pending {
        pending.withLock { all in
            guard let p = all[pid] else { return Pending() }
            all[pid] = Pending()
            return p
        }
    }

    /// Symbolizes taken samples into the window (outside the pending lock).
    private func feed(_ t: Target, _ p: Pending) {
        for s in p.samples {
            t.assembler.add(user: s.userStack, kernel: settings.kernelFrames ? s.kernelStack : [],
                            registers: s.userRegisters.map { ($0.ip, $0.sp, $0.bp) }, stackCopy: s.userStackCopy)
        }
        t.totalSamples &+= UInt64(p.samples.count)
        t.assembler.lost &+= p.lost
        t.totalLost &+= p.lost
    }

    /// Symbolizes what arrived and closes windows that are due, every 200 ms.
    private func loop() {
        while running.load(ordering: .relaxed) {
            usleep(200_000)
            let now = Self.unixNanos()
            let pids = workLock.withLock { Array(targets.keys) }
            for pid in pids {
                workLock.lock()
                defer { workLock.unlock() }
                guard let t = targets[pid] else { continue } // detached meanwhile
                feed(t, take(pid))
                if now >= t.assembler.windowStartUnixNanos &+ settings.windowNanos { finishWindow(pid: pid, t, now: now) }
            }
        }
        workerDone.signal()
    }

    private func finishWindow(pid: Int32, _ t: Target, now: UInt64) {
        do {
            let w = try t.assembler.finish(endUnixNanos: now, top: settings.top)
            emit.profile(pid: pid, type: "cpu", data: w.pprof, startUnixNano: w.startUnixNanos,
                         durationNano: w.durationNanos, samples: Int64(w.samples),
                         attributes: [("profile.frequency_hz", .int(Int64(settings.frequency))),
                                      ("profile.lost", .int(Int64(w.lost)))])
            emit.metrics([
                .counter("process.cpu.profile.samples", Double(t.totalSamples), unit: "{sample}", pid: pid),
                .counter("process.cpu.profile.lost", Double(t.totalLost), unit: "{sample}", pid: pid),
            ])
            if settings.hotspots && w.samples > 0 {
                func list(_ l: [(name: String, share: Double)]) -> String {
                    l.map { "\($0.name) \(String(format: "%.1f", $0.share * 100))%" }.joined(separator: ", ")
                }
                emit.events([PluginEvent(
                    name: "cpu.hotspots", severity: .info,
                    body: "pid \(pid) (\(t.comm)): \(w.samples) samples in \(w.durationNanos / 1_000_000) ms; "
                        + "top self: \(list(w.topSelf)); top total: \(list(w.topTotal))",
                    pid: pid,
                    attributes: [("profile.samples", .int(Int64(w.samples))),
                                 ("hotspots.self", .string(list(w.topSelf))),
                                 ("hotspots.total", .string(list(w.topTotal)))])])
            }
        } catch {
            emit.log(.warn, "pid \(pid): profile window dropped: \(error)")
        }
    }

    static func unixNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

@_cdecl("ferret_plugin_entry") public func ferretPluginEntry(_ major: UInt32, _ minor: UInt32, _ host: UnsafePointer<ferret_host_api>?) -> UnsafeRawPointer? { FerretExport.entry(CPUProfilerCollector.self, major, minor, host) }
