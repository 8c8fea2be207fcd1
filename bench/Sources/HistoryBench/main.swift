// The dashboard's in-memory history (issue #9): memory for N series over an
// hour at a 1 s interval, the cost of adding a point, and of the queries the
// pages make. Usage: HistoryBench [SERIES] [SECONDS]
import FerretCore
import Foundation
import SinkDashboard

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
func rssBytes() -> Int {
    let text = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? ""
    let pages = Int(text.split(separator: " ").dropFirst().first ?? "0") ?? 0
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

let args = CommandLine.arguments
let seriesCount = args.count > 1 ? Int(args[1]) ?? 1000 : 1000
let seconds = args.count > 2 ? Int(args[2]) ?? 3600 : 3600
let names = ["go.goroutine.count", "go.sched.threads", "go.memory.heap.used", "go.memory.heap.committed", "process.cpu.time",
             "process.memory.usage", "go.gc.count", "go.sched.procs.idle", "process.thread.count", "go.memory.stack.used"]
let keys = (0..<seriesCount).map { i in
    MetricHistory.Key(name: names[i % names.count], pid: Int64(1000 + i / names.count), group: "group-\(i / names.count % 100)", attributes: "")
}
let history = MetricHistory()
let rss0 = rssBytes()
let t0: Int64 = 1_790_000_000_000
var rng: UInt64 = 1
let start = now()
for s in 0..<seconds {
    for k in keys {
        rng = rng &* 6364136223846793005 &+ 1442695040888963407
        history.add(k, time: t0 + Int64(s) * 1000, value: Double(rng >> 40))
    }
}
let elapsed = now() - start
let rss1 = rssBytes()
let adds = Double(seriesCount * seconds)
print(String(format: "history: %d series × %d s at 1 s: %.1f MiB accounted (%.1f KiB a series), RSS +%.1f MiB; %.2f µs a point, %.2f M points/s",
             seriesCount, seconds, Double(history.bytes) / 1048576, Double(history.bytes) / Double(seriesCount) / 1024,
             Double(rss1 - rss0) / 1048576, elapsed / adds * 1e6, adds / elapsed / 1e6))
let end = t0 + Int64(seconds - 1) * 1000
var q0 = now()
var n = 0
for k in keys.prefix(100) { n += history.query(k, from: end - 3_600_000, to: end, maxPoints: 600).count }
print(String(format: "query: the last hour of a series as 600 points: %.3f ms (mean of 100 series, %d points each)",
             (now() - q0) / 100 * 1e3, n / 100))
q0 = now()
let all = history.series()
print(String(format: "list: %d series with their last values: %.2f ms", all.count, (now() - q0) * 1e3))
