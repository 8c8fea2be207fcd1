import CoreMetrics
import Foundation
import Synchronization

/// The agent's own metrics (`ferret.*`) through swift-metrics: components
/// create `Counter`, `Meter`, `Recorder` and `Timer` values with
/// `factory: SelfTelemetry.shared` (the agent also bootstraps the global
/// MetricsSystem with it, so libraries that report through swift-metrics land
/// here too), and the agent turns a snapshot into metric points every
/// `self_metrics_interval`. Values that only exist when looked at (a queue's
/// length, a process count) are observed gauges, read at the snapshot.
///
/// Handlers are shared by (label, dimensions) and reference-counted: a sink
/// replaced by a reload with the same name keeps counting on the same series,
/// and a series leaves the snapshot when its last owner destroys it.
public final class SelfTelemetry: MetricsFactory, Sendable {
    public static let shared = SelfTelemetry()

    /// The unit of each `ferret.*` label (UCUM, as the plugins' metrics).
    static let units: [String: String] = [
        "ferret.pipeline.points.accepted": "{signal}", "ferret.pipeline.points.dropped": "{signal}",
        "ferret.sink.written": "{signal}", "ferret.sink.dropped": "{signal}", "ferret.sink.errors": "{error}",
        "ferret.plugin.collect.duration": "s", "ferret.plugin.collect.count": "{collect}",
        "ferret.plugin.collect.errors": "{error}", "ferret.plugin.collect.skipped": "{collect}",
        "ferret.plugin.call.timeouts": "{call}", "ferret.plugin.call.errors": "{error}", "ferret.plugin.healthy": "1",
        "ferret.plugin.emit.dropped": "{signal}", "ferret.plugin.emit.invalid": "{batch}", "ferret.plugin.emitted": "{signal}",
        "ferret.config.reloads": "{reload}", "ferret.config.reload_failures": "{reload}",
        "ferret.discovery.attach.latency": "s",
    ]

    struct Key: Hashable {
        var label: String
        var dimensions: [String]
        init(_ label: String, _ dimensions: [(String, String)]) {
            self.label = label
            self.dimensions = dimensions.flatMap { [$0.0, $0.1] }
        }
    }

    enum Value {
        case counter(Int64)
        case gauge(Double)
        case histogram(HistogramData)
    }

    /// One series: what swift-metrics hands components, for every kind.
    final class Series: CounterHandler, FloatingPointCounterHandler, RecorderHandler, MeterHandler, TimerHandler, @unchecked Sendable {
        enum Kind { case counter, floatCounter, gauge, timer }
        let key: Key
        let kind: Kind
        let dimensions: [(String, String)]
        private let lock = Mutex<(int: Int64, double: Double, timer: HistogramData)>(
            (0, 0, HistogramData(count: 0, sum: 0, bounds: SelfTelemetry.timerBounds,
                                 bucketCounts: [UInt64](repeating: 0, count: SelfTelemetry.timerBounds.count + 1))))
        var owners = 1

        init(_ key: Key, _ kind: Kind, _ dimensions: [(String, String)]) {
            self.key = key
            self.kind = kind
            self.dimensions = dimensions
        }

        func increment(by amount: Int64) { lock.withLock { $0.int &+= amount } }
        func increment(by amount: Double) { lock.withLock { $0.double += amount } }
        func decrement(by amount: Double) { lock.withLock { $0.double -= amount } }
        func reset() { lock.withLock { $0.int = 0; $0.double = 0 } }
        func record(_ value: Int64) { lock.withLock { $0.double = Double(value) } }
        func record(_ value: Double) { lock.withLock { $0.double = value } }
        func set(_ value: Int64) { lock.withLock { $0.double = Double(value) } }
        func set(_ value: Double) { lock.withLock { $0.double = value } }
        func recordNanoseconds(_ duration: Int64) {
            let s = Double(max(0, duration)) / 1e9
            lock.withLock { v in
                v.timer.count += 1
                v.timer.sum += s
                let i = v.timer.bounds.firstIndex { s <= $0 } ?? v.timer.bounds.count
                v.timer.bucketCounts[i] += 1
                v.double = max(v.double, s)
            }
        }

        var value: Value {
            lock.withLock { v in
                switch kind {
                case .counter: .counter(v.int)
                case .floatCounter: .gauge(v.double)
                case .gauge: .gauge(v.double)
                case .timer: .histogram(v.timer)
                }
            }
        }

        /// The largest duration a timer recorded (seconds).
        var timerMax: Double { lock.withLock { $0.double } }
    }

    /// Bucket bounds of every timer, in seconds (1 ms to 2.5 s).
    public static let timerBounds: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

    private let series = Mutex<[Key: Series]>([:])
    private let observed = Mutex<[Int: (label: String, dimensions: [(String, String)], unit: String, cumulative: Bool,
                                        read: @Sendable () -> (Double, [(String, String)])?)]>([:])
    private let nextToken = Atomic<Int>(1)
    private static let bootstrapped = Mutex(false)

    /// A factory of its own (a test's pipeline); the agent's is `shared`.
    public init() {}

    /// Makes this factory the process's MetricsSystem factory (once; a second
    /// call, or a process that bootstrapped another factory first, is a no-op).
    public static func bootstrap() {
        bootstrapped.withLock { done in
            guard !done else { return }
            done = true
            MetricsSystem.bootstrap(shared)
        }
    }

    private func make(_ label: String, _ dimensions: [(String, String)], _ kind: Series.Kind) -> Series {
        let key = Key(label, dimensions)
        return series.withLock { all in
            if let s = all[key] {
                s.owners += 1
                return s
            }
            let s = Series(key, kind, dimensions)
            all[key] = s
            return s
        }
    }

    private func destroy(_ handler: AnyObject) {
        guard let s = handler as? Series else { return }
        series.withLock { all in
            s.owners -= 1
            if s.owners <= 0, all[s.key] === s { all[s.key] = nil }
        }
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> CounterHandler { make(label, dimensions, .counter) }
    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> FloatingPointCounterHandler {
        make(label, dimensions, .floatCounter)
    }
    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> RecorderHandler {
        make(label, dimensions, .gauge)
    }
    public func makeMeter(label: String, dimensions: [(String, String)]) -> MeterHandler { make(label, dimensions, .gauge) }
    public func makeTimer(label: String, dimensions: [(String, String)]) -> TimerHandler { make(label, dimensions, .timer) }
    public func destroyCounter(_ handler: CounterHandler) { destroy(handler) }
    public func destroyFloatingPointCounter(_ handler: FloatingPointCounterHandler) { destroy(handler) }
    public func destroyRecorder(_ handler: RecorderHandler) { destroy(handler) }
    public func destroyMeter(_ handler: MeterHandler) { destroy(handler) }
    public func destroyTimer(_ handler: TimerHandler) { destroy(handler) }

    /// Adds a value read when a snapshot is taken (nil: left out that time):
    /// a gauge, or with `cumulative` a counter some other part keeps (a
    /// delivery's totals). Returns a token for `removeObserved`.
    @discardableResult
    public func observe(_ label: String, _ dimensions: [(String, String)] = [], unit: String, cumulative: Bool = false,
                        _ read: @escaping @Sendable () -> Double?) -> Int {
        observe(label, dimensions, unit: unit, cumulative: cumulative) { read().map { ($0, []) } }
    }

    /// An observed value whose reading brings attributes of its own (a state).
    @discardableResult
    public func observe(_ label: String, _ dimensions: [(String, String)] = [], unit: String, cumulative: Bool = false,
                        _ read: @escaping @Sendable () -> (Double, [(String, String)])?) -> Int {
        let token = nextToken.add(1, ordering: .relaxed).oldValue
        observed.withLock { $0[token] = (label, dimensions, unit, cumulative, read) }
        return token
    }

    public func removeObserved(_ tokens: [Int]) {
        observed.withLock { o in for t in tokens { o[t] = nil } }
    }

    /// The current value of a counter series (0 when there is none).
    public func counterValue(_ label: String, _ dimensions: [(String, String)] = []) -> Int64 {
        guard let s = series.withLock({ $0[Key(label, dimensions)] }), case .counter(let v) = s.value else { return 0 }
        return v
    }

    /// Every series and observed gauge as metric points.
    public func points(now: UInt64, resource: Resource) -> [Signal] {
        var out: [Signal] = []
        func attrs(_ d: [(String, String)]) -> [Attribute] { d.map { Attribute($0.0, .string($0.1)) } }
        for s in series.withLock({ Array($0.values) }).sorted(by: { $0.key.label < $1.key.label }) {
            let unit = Self.units[s.key.label] ?? ""
            switch s.value {
            case .counter(let v):
                out.append(.metric(MetricPoint(name: s.key.label, kind: .counter, unit: unit, value: Double(v),
                                               timeUnixNano: now, attributes: attrs(s.dimensions), resource: resource)))
            case .gauge(let v):
                out.append(.metric(MetricPoint(name: s.key.label, kind: s.kind == .floatCounter ? .counter : .gauge, unit: unit,
                                               value: v, timeUnixNano: now, attributes: attrs(s.dimensions), resource: resource)))
            case .histogram(let h):
                out.append(.metric(MetricPoint(name: s.key.label, kind: .histogram, unit: unit, histogram: h,
                                               timeUnixNano: now, attributes: attrs(s.dimensions), resource: resource)))
                out.append(.metric(MetricPoint(name: s.key.label + ".max", kind: .gauge, unit: unit, value: s.timerMax,
                                               timeUnixNano: now, attributes: attrs(s.dimensions), resource: resource)))
            }
        }
        for (_, o) in observed.withLock({ $0 }).sorted(by: { $0.key < $1.key }) {
            guard let (v, extra) = o.read() else { continue }
            out.append(.metric(MetricPoint(name: o.label, kind: o.cumulative ? .counter : .gauge, unit: o.unit, value: v,
                                           timeUnixNano: now, attributes: attrs(o.dimensions + extra), resource: resource)))
        }
        return out
    }
}

extension SelfTelemetry {
    /// A counter a component owns: a swift-metrics `Counter` on this factory,
    /// whose value the owner can read back (conformance, tests).
    public func counter(_ label: String, _ dimensions: [(String, String)] = []) -> MetricCounter {
        MetricCounter(label, dimensions, factory: self)
    }

    /// A gauge a component sets: a swift-metrics `Meter` on this factory.
    public func gauge(_ label: String, _ dimensions: [(String, String)] = []) -> MetricGauge {
        MetricGauge(label, dimensions, factory: self)
    }

    /// A timer: a swift-metrics `Timer` on this factory, emitted as a histogram
    /// (seconds) and its maximum (`<label>.max`).
    public func timer(_ label: String, _ dimensions: [(String, String)] = []) -> MetricTimer {
        MetricTimer(label, dimensions, factory: self)
    }
}

public final class MetricCounter: Sendable {
    private let counter: CoreMetrics.Counter
    private let series: SelfTelemetry.Series

    init(_ label: String, _ dimensions: [(String, String)], factory: SelfTelemetry) {
        let h = factory.makeCounter(label: label, dimensions: dimensions)
        series = h as! SelfTelemetry.Series
        counter = CoreMetrics.Counter(label: label, dimensions: dimensions, handler: h, factory: factory)
    }

    /// Adds `n`; returns the new value.
    @discardableResult
    public func increment(by n: Int = 1) -> Int64 {
        counter.increment(by: n)
        return value
    }

    public var value: Int64 {
        if case .counter(let v) = series.value { return v }
        return 0
    }

    /// The owner is gone: the series leaves the snapshot with its last owner.
    public func destroy() { counter.destroy() }
}

public final class MetricGauge: Sendable {
    private let meter: CoreMetrics.Meter
    private let series: SelfTelemetry.Series

    init(_ label: String, _ dimensions: [(String, String)], factory: SelfTelemetry) {
        let h = factory.makeMeter(label: label, dimensions: dimensions)
        series = h as! SelfTelemetry.Series
        meter = CoreMetrics.Meter(label: label, dimensions: dimensions, handler: h, factory: factory)
    }

    public func set(_ v: Double) { meter.set(v) }

    public var value: Double {
        if case .gauge(let v) = series.value { return v }
        return 0
    }

    public func destroy() { meter.destroy() }
}

public final class MetricTimer: Sendable {
    private let timer: CoreMetrics.Timer

    init(_ label: String, _ dimensions: [(String, String)], factory: SelfTelemetry) {
        timer = CoreMetrics.Timer(label: label, dimensions: dimensions, handler: factory.makeTimer(label: label, dimensions: dimensions),
                                  factory: factory)
    }

    public func record(nanoseconds: UInt64) { timer.recordNanoseconds(Int64(clamping: nanoseconds)) }

    public func destroy() { timer.destroy() }
}
