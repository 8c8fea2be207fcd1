import CBPF
import Foundation
import LinuxProcess
import Synchronization

/// The loaded BPF object of the http_tracer (bpf/http_tracer.bpf.c) and its
/// uprobes, through libbpf.
///
/// One object serves every traced process: per-process field offsets live in
/// the `procs` map, and each process gets its own uprobe links, filtered by
/// pid. Links are perf-event based (bpf_link), so the kernel removes them
/// when the agent's descriptors close, a killed agent included.
///
/// Thread-safety: `attach`, `detach` and `close` are serialized by a lock;
/// `onEvent` runs on the tracer's own polling thread.
public final class TracerBPF: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        init(_ d: String) { description = d }
    }

    /// Index → meaning of the BPF `counters` map (enum counter).
    public struct Counters: Sendable, Equatable {
        public var inflightFull: UInt64 = 0
        public var ringbufFull: UInt64 = 0
        public var unmatchedReturn: UInt64 = 0
        public var readErrors: UInt64 = 0
        public var entries: UInt64 = 0
        public var events: UInt64 = 0
        /// Entries run twice for one call (runtime.morestack re-runs the function).
        public var reentries: UInt64 = 0
        /// Header maps that could not be searched for traceparent.
        public var headerMisses: UInt64 = 0
        /// Server responses whose writer was not an *http.response (no status).
        public var statusUnknown: UInt64 = 0
        /// Goroutines that inherited a span context from the one that started them.
        public var goroutineContexts: UInt64 = 0
    }

    private let object: OpaquePointer
    private let programs: [String: OpaquePointer]
    private let procsFD: Int32
    /// Maps keyed by struct gkey {pid, pad, goroutine}: cleared per pid on detach.
    private let perGoroutineFDs: [Int32]
    private let countersFD: Int32
    private let ring: OpaquePointer
    private var links: [Int32: [OpaquePointer]] = [:]
    private var closed = false
    private let lock = NSLock()
    /// What the ring callback and the polling thread use: never `self`, so
    /// neither touches a tracer that is being deinitialized.
    private let sink: Sink

    private final class Sink: @unchecked Sendable {
        let onEvent: @Sendable (HTTPEvent) -> Void
        let running = Atomic<Bool>(true)
        let done = DispatchSemaphore(value: 0)
        let malformed = Atomic<UInt64>(0)
        init(_ onEvent: @escaping @Sendable (HTTPEvent) -> Void) { self.onEvent = onEvent }
    }

    /// Ring-buffer records that did not decode as an event.
    public var malformedEvents: UInt64 { sink.malformed.load(ordering: .relaxed) }

    /// Opens and loads the object at `objectPath` and starts polling its ring
    /// buffer on a thread of its own. Needs CAP_BPF and CAP_PERFMON (or root).
    public init(objectPath: String, onEvent: @escaping @Sendable (HTTPEvent) -> Void) throws {
        guard FileManager.default.isReadableFile(atPath: objectPath) else {
            throw Failure("BPF object \(objectPath) is missing (scripts/build.sh compiles it next to the plugin)")
        }
        guard let obj = bpf_object__open_file(objectPath, nil) else {
            throw Failure("bpf_object__open_file(\(objectPath)): \(Self.errnoText())")
        }
        let err = bpf_object__load(obj)
        guard err == 0 else {
            bpf_object__close(obj)
            throw Failure("loading \(objectPath) failed: \(String(cString: strerror(-err))) (needs CAP_BPF and CAP_PERFMON; libbpf logs the verifier's reason on stderr)")
        }
        func prog(_ name: String) throws -> OpaquePointer {
            guard let p = bpf_object__find_program_by_name(obj, name) else { throw Failure("\(objectPath) has no program \(name)") }
            return p
        }
        func mapFD(_ name: String) throws -> Int32 {
            guard let m = bpf_object__find_map_by_name(obj, name) else { throw Failure("\(objectPath) has no map \(name)") }
            return bpf_map__fd(m)
        }
        let sink = Sink(onEvent)
        let eventsFD: Int32
        do {
            var ps: [String: OpaquePointer] = [:]
            for name in ["server_entry", "server_return", "client_entry", "client_return", "newproc_entry", "newproc_return"] {
                ps[name] = try prog(name)
            }
            programs = ps
            procsFD = try mapFD("procs")
            perGoroutineFDs = [try mapFD("inflight"), try mapFD("client_inflight"), try mapFD("goroutine_ctx"),
                               try mapFD("server_by_goid")]
            countersFD = try mapFD("counters")
            eventsFD = try mapFD("events")
        } catch {
            bpf_object__close(obj)
            throw error
        }
        // The sink outlives the ring: it is released after ring_buffer__free.
        let ctx = Unmanaged.passRetained(sink).toOpaque()
        guard let rb = ring_buffer__new(eventsFD, { ctx, data, size in
            guard let ctx, let data else { return 0 }
            let sink = Unmanaged<Sink>.fromOpaque(ctx).takeUnretainedValue()
            if let e = HTTPEvent(UnsafeRawBufferPointer(start: data, count: size)) {
                sink.onEvent(e)
            } else {
                sink.malformed.add(1, ordering: .relaxed)
            }
            return 0
        }, ctx, nil) else {
            Unmanaged<Sink>.fromOpaque(ctx).release()
            bpf_object__close(obj)
            throw Failure("ring_buffer__new: \(Self.errnoText())")
        }
        object = obj
        ring = rb
        self.sink = sink
        let ringAddress = UInt(bitPattern: rb)
        let t = Thread {
            let rb = OpaquePointer(bitPattern: ringAddress)
            // The programs wake this thread only when 256 KiB are waiting
            // (a wakeup per event would cost the traced program a context
            // switch per request), so it also consumes every 50 ms.
            while sink.running.load(ordering: .relaxed) {
                _ = ring_buffer__poll(rb, 50)
                _ = ring_buffer__consume(rb)
            }
            sink.done.signal()
        }
        t.name = "http_tracer ring"
        t.start()
    }

    /// Starts tracing `pid`: writes its offsets, then attaches the entry and
    /// every RET uprobe of each function in the plan (all or nothing).
    public func attach(pid: Int32, plan: ProbePlan) throws {
        lock.lock()
        defer { lock.unlock() }
        guard !closed else { throw Failure("the tracer is closed") }
        guard links[pid] == nil else { throw Failure("pid \(pid) is already traced") }
        var key = pid
        let value = plan.offsets.bytes
        let st = value.withUnsafeBytes { v in bpf_map_update_elem(procsFD, &key, v.baseAddress, UInt64(BPF_ANY)) }
        guard st == 0 else { throw Failure("pid \(pid): procs map update failed: \(Self.errnoText())") }
        let path = "\(HostProc.path)/\(pid)/exe"
        var made: [OpaquePointer] = []
        func undo() {
            for l in made { bpf_link__destroy(l) }
            var k = pid
            _ = bpf_map_delete_elem(procsFD, &k)
        }
        var sites: [(OpaquePointer, UInt64)] = []
        for (probes, prefix) in [(plan.server, "server"), (plan.client, "client"), (plan.spawn, "newproc")] {
            guard let probes, let entry = programs["\(prefix)_entry"], let ret = programs["\(prefix)_return"] else { continue }
            sites.append((entry, probes.entryFileOffset))
            sites += probes.returnFileOffsets.map { (ret, $0) }
        }
        for (prog, offset) in sites {
            var opts = bpf_uprobe_opts()
            opts.sz = MemoryLayout<bpf_uprobe_opts>.size
            opts.retprobe = false  // never uretprobes on Go code
            guard let link = bpf_program__attach_uprobe_opts(prog, pid, path, Int(offset), &opts) else {
                let why = Self.errnoText()
                undo()
                throw Failure("pid \(pid): uprobe at \(path)+0x\(String(offset, radix: 16)) failed: \(why)")
            }
            made.append(link)
        }
        links[pid] = made
    }

    /// Stops tracing `pid`: destroys its links, forgets its offsets and drops
    /// its in-flight entries. Returns the number of probes removed.
    @discardableResult
    public func detach(pid: Int32) -> Int {
        lock.lock()
        defer { lock.unlock() }
        return detachLocked(pid)
    }

    private func detachLocked(_ pid: Int32) -> Int {
        guard let ls = links.removeValue(forKey: pid) else { return 0 }
        // Without its procs entry the programs return at once for this pid,
        // so the probes are inert while the links go away (slowly, below).
        var k = pid
        _ = bpf_map_delete_elem(procsFD, &k)
        Self.destroy(ls)
        for fd in perGoroutineFDs { Self.deleteKeys(fd) { $0 == pid } }
        return ls.count
    }

    /// Pids being traced.
    public var tracedPids: [Int32] { lock.withLock { Array(links.keys).sorted() } }

    /// Number of uprobe links currently held.
    public var linkCount: Int { lock.withLock { links.values.reduce(0) { $0 + $1.count } } }

    /// Entries in the server and client in-flight maps and the goroutine
    /// context map (for tests and self-metrics).
    public func inflightCount(pid: Int32? = nil) -> Int {
        var n = 0
        for fd in perGoroutineFDs { Self.forEachKey(fd) { p, _ in if pid == nil || p == pid { n += 1 } } }
        return n
    }

    /// Sums the per-CPU counters.
    public func counters() -> Counters {
        let ncpu = Int(libbpf_num_possible_cpus())
        var c = Counters()
        guard ncpu > 0 else { return c }
        var vals = [UInt64](repeating: 0, count: ncpu)
        let fields: [WritableKeyPath<Counters, UInt64>] = [
            \.inflightFull, \.ringbufFull, \.unmatchedReturn, \.readErrors, \.entries, \.events, \.reentries,
            \.headerMisses, \.statusUnknown, \.goroutineContexts,
        ]
        for (i, field) in fields.enumerated() {
            var k = UInt32(i)
            guard bpf_map_lookup_elem(countersFD, &k, &vals) == 0 else { continue }
            c[keyPath: field] = vals.reduce(0, &+)
        }
        return c
    }

    /// Stops polling (draining what is left), detaches everything and closes
    /// the object. Idempotent; `deinit` calls it too.
    public func close() {
        lock.lock()
        defer { lock.unlock() }
        guard !closed else { return }
        closed = true
        sink.running.store(false, ordering: .relaxed)
        sink.done.wait()
        _ = ring_buffer__consume(ring)
        for pid in Array(links.keys) { _ = detachLocked(pid) }
        ring_buffer__free(ring)
        Unmanaged.passUnretained(sink).release()
        bpf_object__close(object)
    }

    deinit { close() }

    /// Destroys links side by side, a thread each: closing a uprobe's perf
    /// event waits out a kernel RCU grace period (~0.2 s each, measured with
    /// strace on 6.18), a sleep rather than work, and the waits overlap.
    private static func destroy(_ links: [OpaquePointer]) {
        let group = DispatchGroup()
        for l in links {
            let address = UInt(bitPattern: l)
            group.enter()
            let t = Thread {
                bpf_link__destroy(OpaquePointer(bitPattern: address))
                group.leave()
            }
            t.name = "http_tracer detach"
            t.start()
        }
        group.wait()
    }

    // MARK: - per-goroutine maps

    /// Keys of a map keyed by struct gkey {u32 pid; u32 pad; u64 goroutine}.
    private static func forEachKey(_ fd: Int32, _ body: (Int32, [UInt8]) -> Void) {
        var prev = [UInt8](repeating: 0, count: 16)
        var next = [UInt8](repeating: 0, count: 16)
        var first = true
        while true {
            let st = first
                ? bpf_map_get_next_key(fd, nil, &next)
                : bpf_map_get_next_key(fd, &prev, &next)
            guard st == 0 else { return }
            first = false
            let pid = next.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: Int32.self) }
            body(pid, next)
            prev = next
        }
    }

    private static func deleteKeys(_ fd: Int32, _ matches: (Int32) -> Bool) {
        var doomed: [[UInt8]] = []
        forEachKey(fd) { pid, key in if matches(pid) { doomed.append(key) } }
        for var k in doomed { _ = bpf_map_delete_elem(fd, &k) }
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }
}
