// heap: memory figures for every process (from /proc), and the Go runtime's
// heap, stack, off-heap and GC figures for Go processes, read from outside the
// process through GoIntrospection's HeapReader (process_vm_readv; never a stop,
// never a write).
import FerretPluginKit
import Foundation
import GoIntrospection

public final class HeapCollector: FerretCollector {
    public static let name = "heap"
    public static let version = "0.1.0"
    public static let summary = "RSS, virtual, PSS; Go heap used/committed/idle/released/live/objects, stacks, off-heap, GC count, pauses, GC CPU"

    private struct Target {
        var comm: String
        var reader: HeapReader?
        /// The previous reading, for go.gc.cpu.fraction over the interval.
        var last: HeapSnapshot?
        var pssWarned = false
        /// Whether PSS was read once (a new process gets it at its first collection).
        var pssRead = false
    }

    private let emit: Emitter
    private let includeGo: Bool
    private let includePSS: Bool
    private let pssEvery: Int
    private var targets: [Int32: Target] = [:]
    private var round = 0
    /// Collect calls are serialized by the host: one buffer for every /proc read.
    private let text = ProcText()
    private static let pageSize = UInt64(sysconf(Int32(_SC_PAGESIZE)))

    public struct Settings: PluginSettings {
        /// Read the Go runtime's heap state of Go processes (default true).
        var go_runtime: Bool?
        /// Read PSS from /proc/PID/smaps_rollup (default true).
        var pss: Bool?
        /// Read PSS every Nth collection (default 10): the kernel walks the page tables.
        var pss_every: Int?

        public enum CodingKeys: String, CodingKey, CaseIterable { case go_runtime, pss, pss_every }

        public func check() throws {
            if let n = pss_every, n < 1 {
                throw PluginError.invalidConfig("pss_every must be at least 1, got \(n)", path: "/pss_every")
            }
        }
    }

    public init(context: PluginContext) throws {
        let s = try context.settings(Settings.self)
        includeGo = s.go_runtime ?? true
        includePSS = s.pss ?? true
        pssEvery = s.pss_every ?? 10
        emit = context.emit
    }

    public func attach(_ target: PluginTarget) throws {
        var t = Target(comm: target.comm)
        if includeGo && target.isGo {
            do {
                let binary = try GoBinaryCache.binary(path: "\(HostProc.path)/\(target.pid)/exe")
                t.reader = try HeapReader(pid: target.pid, binary: binary)
            } catch {
                // No guessed numbers: say why once, keep the OS figures.
                emit.events([PluginEvent(name: IntrospectionError.eventName(for: error), severity: .warn,
                                         body: "pid \(target.pid) (\(target.comm)): Go heap figures unavailable: \(error)",
                                         pid: target.pid, attributes: [("reason", .string("\(error)"))])])
            }
        }
        targets[target.pid] = t
    }

    public func detach(pid: Int32) throws {
        guard targets.removeValue(forKey: pid) != nil else { throw PluginError.failed("pid \(pid) is not attached") }
    }

    public func collect(now: UInt64) throws {
        var points: [Metric] = []
        let pssRound = round % pssEvery == 0
        round &+= 1
        for pid in targets.keys.sorted() {
            guard var t = targets[pid] else { continue }
            defer { targets[pid] = t }
            guard let m = readOS(pid: pid) else { continue } // exited: the host detaches it
            points.append(.gauge("process.memory.usage", Double(m.rss), unit: "By", pid: pid))
            points.append(.gauge("process.memory.virtual", Double(m.virtual), unit: "By", pid: pid))
            if includePSS && (pssRound || !t.pssRead) {
                t.pssRead = true
                switch readPSS(pid: pid) {
                case .success(let pss):
                    points.append(.gauge("process.memory.pss", Double(pss), unit: "By", pid: pid))
                case .failure(let why):
                    if !t.pssWarned {
                        t.pssWarned = true
                        emit.log(.warn, "pid \(pid) (\(t.comm)): process.memory.pss unavailable: \(why)")
                    }
                }
            }
            guard let reader = t.reader else { continue }
            do {
                let s = try reader.read()
                func g(_ name: String, _ v: UInt64) { points.append(.gauge(name, Double(v), unit: "By", pid: pid)) }
                g("go.memory.heap.used", s.heapInUse)
                g("go.memory.heap.committed", s.heapCommitted)
                g("go.memory.heap.idle", s.heapIdle)
                g("go.memory.heap.released", s.heapReleased)
                g("go.memory.heap.live", s.heapLive)
                points.append(.gauge("go.memory.heap.objects", Double(s.heapObjects), unit: "{object}", pid: pid))
                g("go.memory.stack.used", s.stackInUse)
                g("go.memory.stack.committed", s.stackSys)
                g("go.memory.offheap.used", s.offHeapUsed)
                g("go.memory.offheap.committed", s.offHeapCommitted)
                g("go.memory.total.committed", s.sys)
                g("go.memory.gc.goal", s.nextGC)
                points.append(.counter("go.gc.count", Double(s.numGC), unit: "{gc}", pid: pid))
                points.append(.counter("go.gc.pause.time", Double(s.pauseTotalNs) / 1e9, unit: "s", pid: pid))
                if let last = t.last, let f = HeapSnapshot.gcCPUFraction(from: last, to: s) {
                    points.append(.gauge("go.gc.cpu.fraction", f, unit: "1", pid: pid))
                }
                t.last = s
            } catch let e as ProcessReadError {
                if case .exited = e { continue }
                emit.log(.warn, "pid \(pid): Go heap read failed: \(e)")
            } catch {
                // Torn under every attempt: nothing reported for this interval.
                emit.log(.debug, "pid \(pid): Go heap read skipped: \(error)")
            }
        }
        emit.metrics(points)
    }

    /// /proc/PID/statm: size and resident, in pages.
    func readOS(pid: Int32) -> (rss: UInt64, virtual: UInt64)? {
        guard text.read("\(HostProc.path)/\(pid)/statm"), let size = text.number(at: 0), let resident = text.number(at: 1) else {
            return nil
        }
        return (resident * Self.pageSize, size * Self.pageSize)
    }

    struct Unavailable: Error, CustomStringConvertible { var description: String }

    /// The `Pss:` line of /proc/PID/smaps_rollup (kB), in bytes.
    func readPSS(pid: Int32) -> Result<UInt64, Unavailable> {
        let path = "\(HostProc.path)/\(pid)/smaps_rollup"
        guard text.read(path) else {
            return .failure(Unavailable(description: "\(path) is not readable (kernel < 4.14, or no ptrace access)"))
        }
        guard let kb = text.value(after: "Pss:") else { return .failure(Unavailable(description: "\(path) has no Pss line")) }
        return .success(kb * 1024)
    }
}

@_cdecl("ferret_plugin_entry") public func ferretPluginEntry(_ major: UInt32, _ minor: UInt32, _ host: UnsafePointer<ferret_host_api>?) -> UnsafeRawPointer? { FerretExport.entry(HeapCollector.self, major, minor, host) }
