// Window aggregation benchmark: metric points through the `window` aggregator
// exactly as the pipeline's dispatcher thread drives it (process(batch, now)
// per batch of 1,000 points, tick(now) as the clock moves), single-threaded.
// 1,000 series (50 processes × 20 metric names, one attribute each), lognormal
// values, on a simulated clock of 1,000,000 points per second so that 10 s
// windows close during the run (their percentile computation is in the figure).
// Reports points/s (wall clock) and CPU seconds per million points (getrusage,
// user + system) in steady state, after a first window (reported apart) has
// allocated the series, for two configurations: p99 alone, and every statistic
// with p50, p90, p99 and p999.
//
// Usage: AggregatorBench [points per run, default 20,000,000]
import FerretAggregators
import FerretCore
import Foundation

let total = Int(CommandLine.arguments.dropFirst().first ?? "") ?? 20_000_000
let batchSize = 1000
let processes = 50, names = 20
let simulatedRate = 1_000_000.0  // points per simulated second

/// SplitMix64 + Box-Muller: the same points on every run.
struct Seeded: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

var rng = Seeded(state: 1)
let resources = (0..<processes).map { p in
    Resource([Attribute("process.pid", .int(Int64(10_000 + p))), Attribute("process.executable.name", .string("svc")),
              Attribute("ferret.group", .string("svc-\(p % 5)")), Attribute("ferret.rule", .string("go-services")),
              Attribute("host.name", .string("bench"))])
}
let metricNames = (0..<names).map { "http.server.request.duration.\($0)" }
let attrs = [[Attribute("http.route", .string("/api/v1/items"))], [Attribute("http.route", .string("/healthz"))]]
// 200 distinct batches (200,000 points), cycled; times are set per batch below.
let batches: [[MetricPoint]] = (0..<200).map { _ in
    (0..<batchSize).map { i in
        let u1 = Double.random(in: Double.ulpOfOne..<1, using: &rng), u2 = Double.random(in: 0..<1, using: &rng)
        let g = (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
        return MetricPoint(name: metricNames[i % names], kind: .gauge, unit: "s", value: exp(-5 + g),
                           timeUnixNano: 0, attributes: attrs[(i / names) % 2 == 0 ? 0 : 1 ],
                           resource: resources[(i / names) % processes])
    }
}
let series = Set(batches.flatMap { $0.map { "\($0.name)|\($0.attributes)|\($0.resource.pid!)" } }).count

func cpuSeconds() -> Double {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    return Double(ru.ru_utime.tv_sec) + Double(ru.ru_utime.tv_usec) / 1e6 + Double(ru.ru_stime.tv_sec) + Double(ru.ru_stime.tv_usec) / 1e6
}

func run(_ label: String, _ options: WindowAggregator.Options) {
    let w = WindowAggregator(selector: MetricSelector(names: ["http.*"]), options: options)
    let start: UInt64 = 1_700_000_000_000_000_000
    // Signals built once per run (as the queue hands them over), outside the clock.
    let signals: [[Signal]] = batches.map { $0.map { .metric($0) } }
    var emitted = 0, windows = 0, sent = 0, i = 0
    /// Sends `count` points; returns (wall seconds, CPU seconds).
    func send(_ count: Int) -> (Double, Double) {
        let c0 = cpuSeconds()
        let t0 = Clock.monotonicNanos()
        let end = sent + count
        while sent < end {
            let now = start + UInt64(Double(sent) / simulatedRate * 1e9)
            // Every point is selected and consumed (keep_raw: false): all output is window output.
            var out = w.process(signals[i], nowUnixNano: now)
            out += w.tick(nowUnixNano: now)
            if !out.isEmpty { windows += 1; emitted += out.count }
            sent += batchSize
            i = (i + 1) % signals.count
        }
        return (Double(Clock.monotonicNanos() - t0) / 1e9, cpuSeconds() - c0)
    }
    // The first window allocates each series and grows its histogram to the
    // values' range; after that the arrays are reused (steady state).
    let (firstSecs, firstCPU) = send(Int(simulatedRate * Double(options.every) / 1e9))
    let (secs, cpu) = send(total)
    print(String(format: "window (%@): %d points in %.3f s = %.0f points/s; CPU %.3f s = %.3f CPU s per million points "
                 + "(first window: %.0f points/s, %.3f CPU s per million); %d series, %d windows closed, %d points emitted",
                 label, total, secs, Double(total) / secs, cpu, cpu / (Double(total) / 1e6),
                 simulatedRate * Double(options.every) / 1e9 / firstSecs, firstCPU / (simulatedRate * Double(options.every) / 1e9 / 1e6),
                 series, windows, emitted))
}

var p99 = WindowAggregator.Options()
p99.every = 10_000_000_000
p99.stats = []
p99.percentiles = [("p99", 99)]
var full = WindowAggregator.Options()
full.every = 10_000_000_000
full.percentiles = [("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)]
run("p99", p99)
run("min max mean sum count last p50 p90 p99 p999", full)
var ru = rusage()
getrusage(RUSAGE_SELF.rawValue, &ru)
print(String(format: "max RSS %.1f MiB", Double(ru.ru_maxrss) / 1024))
