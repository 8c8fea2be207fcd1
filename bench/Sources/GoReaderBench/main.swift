// The cost of one Go runtime reading from outside a live process (issue #4,
// "scheduler and heap collector plugins"): each reader's `read()` is timed one
// call at a time against each target process, and the `process_vm_readv` calls
// it makes are counted (ProcessMemory.syscallCount).
//
// Usage: GoReaderBench [--reads N] LABEL=PID ...
//
// Adding a reader: make it conform to `BenchReader` (it needs a `read() throws`
// method; the value it returns is ignored) and add one line to `readers`, e.g.
//   extension HeapReader: BenchReader {}
//   ("HeapReader", { try HeapReader(pid: $0, binary: $1) }),
import Glibc
import GoIntrospection

protocol BenchReader {
    associatedtype Value
    func read() throws -> Value
}

extension SchedulerReader: BenchReader {}
extension HeapReader: BenchReader {}

/// The floor: one `process_vm_readv` of 8 bytes from the process's first
/// writable mapping, timed the same way (what a reading costs at the least).
struct OneWordRead: BenchReader {
    let memory: ProcessMemory
    let address: UInt64
    init(pid: Int32) throws {
        guard let m = try ProcessMaps.read(pid: pid).first(where: { $0.readable && $0.writable && $0.size >= 8 }) else {
            throw IntrospectionError("pid \(pid): no writable mapping")
        }
        memory = ProcessMemory(pid: pid)
        address = m.start
    }
    func read() throws -> UInt64 { try memory.read(UInt64.self, at: address) }
}

/// The readers under test: a name, and how to prepare one for a process.
let readers: [(name: String, make: (Int32, GoBinary) throws -> any BenchReader)] = [
    ("floor (8 bytes, 1 process_vm_readv)", { pid, _ in try OneWordRead(pid: pid) }),
    ("SchedulerReader", { try SchedulerReader(pid: $0, binary: $1) }),
    ("HeapReader", { try HeapReader(pid: $0, binary: $1) }),
]

func nanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

@inline(never) func keep<T>(_ x: T) { withExtendedLifetime(x) {} }

struct Figures {
    var median: Double, p99: Double, mean: Double, min: Double, max: Double
    var syscallsPerRead: Double
    var failures: Int
    /// This process's user and system CPU time per read (getrusage), in µs.
    var userPerRead: Double, systemPerRead: Double
}

func cpuTimes() -> (user: Double, system: Double) {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return (Double(u.ru_utime.tv_sec) * 1e6 + Double(u.ru_utime.tv_usec),
            Double(u.ru_stime.tv_sec) * 1e6 + Double(u.ru_stime.tv_usec))
}

/// Times `reads` calls of `r.read()` one by one (after 200 warm-up calls), in µs.
func measure<R: BenchReader>(_ r: R, reads: Int) -> Figures {
    for _ in 0..<200 { keep(try? r.read()) }
    var times = [Double](repeating: 0, count: reads)
    var failures = 0
    let calls0 = ProcessMemory.syscallCount
    let cpu0 = cpuTimes()
    for i in 0..<reads {
        let t0 = nanos()
        do { keep(try r.read()) } catch { failures += 1 }
        times[i] = Double(nanos() - t0) / 1e3
    }
    let calls = ProcessMemory.syscallCount - calls0
    let cpu1 = cpuTimes()
    let sorted = times.sorted()
    let p99 = sorted[min(sorted.count - 1, Int((Double(sorted.count) * 0.99).rounded(.up)) - 1)]
    return Figures(median: sorted[sorted.count / 2], p99: p99, mean: times.reduce(0, +) / Double(reads),
                   min: sorted[0], max: sorted[sorted.count - 1],
                   syscallsPerRead: Double(calls) / Double(reads), failures: failures,
                   userPerRead: (cpu1.user - cpu0.user) / Double(reads), systemPerRead: (cpu1.system - cpu0.system) / Double(reads))
}

var args = Array(CommandLine.arguments.dropFirst())
var reads = 10_000
if let i = args.firstIndex(of: "--reads"), i + 1 < args.count, let n = Int(args[i + 1]) {
    reads = n
    args.removeSubrange(i...(i + 1))
}
let targets: [(label: String, pid: Int32)] = args.compactMap {
    let parts = $0.split(separator: "=", maxSplits: 1)
    guard parts.count == 2, let pid = Int32(parts[1]) else { return nil }
    return (String(parts[0]), pid)
}
guard !targets.isEmpty, targets.count == args.count else {
    print("usage: GoReaderBench [--reads N] LABEL=PID ...")
    exit(2)
}

var failed = false
for t in targets {
    let binary: GoBinary
    do { binary = try GoBinary(path: "/proc/\(t.pid)/exe") } catch {
        print("\(t.label) (pid \(t.pid)): \(error)")
        failed = true
        continue
    }
    let status = (try? String(contentsOfFile: "/proc/\(t.pid)/status", encoding: .utf8)) ?? ""
    let threads = status.split(separator: "\n").first { $0.hasPrefix("Threads:") }?.split(separator: "\t").last ?? "?"
    for r in readers {
        // Preparing a reader (symbols, layouts, load bias): once per attach.
        var prepare: [Double] = []
        var reader: (any BenchReader)?
        do {
            for _ in 0..<5 {
                let t0 = nanos()
                reader = try r.make(t.pid, binary)
                prepare.append(Double(nanos() - t0) / 1e3)
            }
        } catch {
            print("\(r.name) on \(t.label) (pid \(t.pid), \(binary.goVersion ?? "?")): unavailable: \(error)")
            failed = true
            continue
        }
        prepare.sort()
        let f = measure(reader!, reads: reads)
        print(String(format: "%@ on %@ (pid %d, %@, %@ OS threads): %d reads: median %.2f µs, p99 %.2f µs, mean %.2f µs, min %.2f µs, max %.1f µs; %.2f process_vm_readv per read (CPU per read: user %.1f µs, system %.1f µs); %d failed; prepare (given the parsed binary) median %.0f µs",
                     r.name, t.label, t.pid, binary.goVersion ?? "?", String(threads), reads, f.median, f.p99, f.mean, f.min, f.max,
                     f.syscallsPerRead, f.userPerRead, f.systemPerRead, f.failures, prepare[2]))
        if f.failures > 0 { failed = true }
    }
}
exit(failed ? 1 : 0)
