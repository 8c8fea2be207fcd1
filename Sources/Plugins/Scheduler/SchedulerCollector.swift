// scheduler: CPU and scheduling figures for every process (from /proc), system
// calls (perf tracepoint raw_syscalls:sys_enter, counting; see SyscallCounter),
// and the Go runtime's scheduler state for Go processes, read from outside the
// process through GoIntrospection (process_vm_readv; never a stop, never a write).
import FerretPluginKit
import Foundation
import GoIntrospection
import Synchronization

public final class SchedulerCollector: FerretCollector {
    public static let name = "scheduler"
    public static let version = "0.1.0"
    public static let summary = "CPU time, threads, context switches, run delay, system calls; Go goroutines, Ms, Ps, run queue, cgo calls"

    private struct Target {
        var comm: String
        var reader: SchedulerReader?
        var syscalls: SyscallCounter?
    }

    private let emit: Emitter
    private let includeGo: Bool
    private let includeSyscalls: Bool
    private var targets: [Int32: Target] = [:]
    private static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    public struct Settings: PluginSettings {
        /// Read the Go runtime's scheduler state of Go processes (default true).
        var go_runtime: Bool?
        /// Count system calls with a perf tracepoint (default true).
        var syscalls: Bool?

        public enum CodingKeys: String, CodingKey, CaseIterable { case go_runtime, syscalls }
    }

    public init(context: PluginContext) throws {
        let settings = try context.settings(Settings.self)
        includeGo = settings.go_runtime ?? true
        includeSyscalls = settings.syscalls ?? true
        emit = context.emit
    }

    public func attach(_ target: PluginTarget) throws {
        var t = Target(comm: target.comm, reader: nil)
        if includeGo && target.isGo {
            do {
                let binary = try GoBinaryCache.binary(path: "\(HostProc.path)/\(target.pid)/exe")
                t.reader = try SchedulerReader(pid: target.pid, binary: binary)
            } catch {
                // No guessed numbers: say why once, keep the OS figures.
                emit.events([PluginEvent(name: IntrospectionError.eventName(for: error), severity: .warn,
                                         body: "pid \(target.pid) (\(target.comm)): Go scheduler figures unavailable: \(error)",
                                         pid: target.pid, attributes: [("reason", .string("\(error)"))])])
            }
        }
        if includeSyscalls {
            t.syscalls = openSyscallCounter(target)
        }
        targets[target.pid] = t
    }

    /// The process's system call counter, or nil after saying why once.
    private func openSyscallCounter(_ target: PluginTarget) -> SyscallCounter? {
        do {
            var mounted = false
            let id = try Tracefs.sysEnterID(mounted: &mounted)
            if mounted { emit.log(.info, "mounted tracefs at \(Tracefs.mountPoint) for process.syscalls") }
            return try SyscallCounter(pid: target.pid, tracepointID: id)
        } catch {
            if case .exited = error { return nil } // the host detaches it
            unavailable(target.pid, target.comm, error)
            return nil
        }
    }

    /// Says once why a process gets no process.syscalls.
    private func unavailable(_ pid: Int32, _ comm: String, _ error: SyscallCountError) {
        emit.events([PluginEvent(name: "process.syscalls.unavailable", severity: .warn,
                                 body: "pid \(pid) (\(comm)): system call counts unavailable: \(error)",
                                 pid: pid, attributes: [("reason", .string("\(error)"))])])
    }

    public func detach(pid: Int32) throws {
        guard let t = targets.removeValue(forKey: pid) else { throw PluginError.failed("pid \(pid) is not attached") }
        t.syscalls?.close()
    }

    public func collect(now: UInt64) throws {
        var points: [Metric] = []
        for (pid, t) in targets.sorted(by: { $0.key < $1.key }) {
            guard let os = Self.readOS(pid: pid) else { // exited: the host detaches it; free the events now
                if let counter = t.syscalls {
                    counter.close()
                    targets[pid]?.syscalls = nil
                }
                continue
            }
            points.append(.counter("process.cpu.time", os.user, unit: "s", pid: pid, attributes: [("cpu.mode", .string("user"))]))
            points.append(.counter("process.cpu.time", os.system, unit: "s", pid: pid, attributes: [("cpu.mode", .string("system"))]))
            points.append(.gauge("process.thread.count", Double(os.threads), unit: "{thread}", pid: pid))
            points.append(.counter("process.context_switches", Double(os.voluntary), unit: "{context_switch}", pid: pid,
                                   attributes: [("type", .string("voluntary"))]))
            points.append(.counter("process.context_switches", Double(os.involuntary), unit: "{context_switch}", pid: pid,
                                   attributes: [("type", .string("involuntary"))]))
            points.append(.counter("process.run_delay", os.runDelay, unit: "s", pid: pid))
            if let counter = t.syscalls {
                switch counter.read() {
                case .success(let n): points.append(.counter("process.syscalls", Double(n), unit: "{syscall}", pid: pid))
                case .failure(let e): // say why once, and stop counting rather than report a wrong number
                    counter.close()
                    targets[pid]?.syscalls = nil
                    unavailable(pid, t.comm, e)
                }
            }
            guard let reader = t.reader else { continue }
            do {
                let s = try reader.read()
                points.append(.gauge("go.goroutine.count", Double(s.goroutines), unit: "{goroutine}", pid: pid))
                points.append(.gauge("go.sched.threads", Double(s.threads), unit: "{thread}", pid: pid))
                points.append(.gauge("go.sched.threads.idle", Double(s.idleThreads), unit: "{thread}", pid: pid))
                points.append(.gauge("go.sched.threads.spinning", Double(s.spinningThreads), unit: "{thread}", pid: pid))
                points.append(.gauge("go.sched.procs", Double(s.procs), unit: "{proc}", pid: pid))
                points.append(.gauge("go.sched.procs.idle", Double(s.idleProcs), unit: "{proc}", pid: pid))
                points.append(.gauge("go.sched.runqueue.global", Double(s.globalRunQueue), unit: "{goroutine}", pid: pid))
                points.append(.counter("go.cgo.calls", Double(s.cgoCalls), unit: "{call}", pid: pid))
            } catch let e as ProcessReadError {
                if case .exited = e { continue }
                emit.log(.warn, "pid \(pid): Go scheduler read failed: \(e)")
            } catch {
                emit.log(.warn, "pid \(pid): Go scheduler read failed: \(error)")
            }
        }
        emit.metrics(points)
    }

    struct OSFigures {
        var user: Double, system: Double, threads: Int, voluntary: Int, involuntary: Int, runDelay: Double
    }

    /// /proc/PID/stat (utime, stime, num_threads), status (context switches),
    /// and task/*/schedstat (time runnable but waiting for a CPU, summed over threads).
    static func readOS(pid: Int32) -> OSFigures? {
        procText.withLock { t in
            // utime is field 14, stime 15, num_threads 20 (proc(5)).
            guard t.read("\(HostProc.path)/\(pid)/stat"), let f = t.statFields([14, 15, 20]) else { return nil }
            var vol: UInt64 = 0, invol: UInt64 = 0
            if t.read("\(HostProc.path)/\(pid)/status") {
                vol = t.value(after: "voluntary_ctxt_switches:") ?? 0
                invol = t.value(after: "nonvoluntary_ctxt_switches:") ?? 0
            }
            var delayNs: UInt64 = 0
            for tid in ProcText.numericEntries("\(HostProc.path)/\(pid)/task") where t.read("\(HostProc.path)/\(pid)/task/\(tid)/schedstat") {
                delayNs &+= t.number(at: 1) ?? 0 // time runnable but waiting, ns
            }
            return OSFigures(user: Double(f[0]) / ticksPerSecond, system: Double(f[1]) / ticksPerSecond,
                             threads: Int(f[2]), voluntary: Int(vol), involuntary: Int(invol),
                             runDelay: Double(delayNs) / 1e9)
        }
    }

    /// One reused buffer for the /proc files (collect calls are serialized; the
    /// lock only makes that explicit).
    private static let procText = Mutex(ProcText())
}

@_cdecl("ferret_plugin_entry") public func ferretPluginEntry(_ major: UInt32, _ minor: UInt32, _ host: UnsafePointer<ferret_host_api>?) -> UnsafeRawPointer? { FerretExport.entry(SchedulerCollector.self, major, minor, host) }
