import FerretCore
/// The per-series state of a detector that raises and resolves events
/// (`threshold`, `anomaly`, `goroutine_leak`).
protocol DetectorState {
    /// When the series last reported (the pipeline's clock).
    var seen: UInt64 { get }
    /// Whether an event was raised and not yet resolved.
    var isFiring: Bool { get }
}

extension Dictionary where Value: DetectorState {
    /// Forgets the series `gone` picks (those of an exited process) and
    /// returns the ones that were firing, to be resolved.
    mutating func forget(where gone: (Key) -> Bool) -> [(key: Key, state: Value)] {
        var firing: [(key: Key, state: Value)] = []
        for (k, v) in self where gone(k) {
            if v.isFiring { firing.append((k, v)) }
            self[k] = nil
        }
        return firing
    }

    /// Forgets the series that have not reported for longer than `stale` and
    /// returns the ones that were firing, to be resolved.
    mutating func forgetStale(now: UInt64, after stale: UInt64) -> [(key: Key, state: Value)] {
        var firing: [(key: Key, state: Value)] = []
        for (k, v) in self where now > v.seen && now - v.seen > stale {
            if v.isFiring { firing.append((k, v)) }
            self[k] = nil
        }
        return firing
    }
}
