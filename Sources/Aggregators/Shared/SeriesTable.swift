import FerretCore

/// A key that belongs to one process: its id in a `ResourceTable`.
protocol ResourceScoped: Hashable {
    var resourceID: Int { get }
}

extension SeriesKey: ResourceScoped {
    var resourceID: Int { resource }
}

/// The per-series state of an aggregator, with the resource table its keys'
/// resource ids come from. It is the one place where the aggregators forget:
/// the series of a process that exited (the agent's typed process-exit event),
/// the series that stopped reporting, and, with them, the resources no series
/// uses any more.
struct SeriesTable<Key: ResourceScoped, State> {
    let resources = ResourceTable()
    private(set) var states: [Key: State] = [:]

    var count: Int { states.count }
    var values: Dictionary<Key, State>.Values { states.values }

    subscript(key: Key) -> State? {
        get { states[key] }
        set { states[key] = newValue }
    }

    /// The resource's id, for building a key.
    func id(_ resource: Resource) -> Int { resources.id(resource) }

    /// Forgets every series of `resource`'s process (it exited) and returns them.
    mutating func forget(process resource: Resource) -> [(key: Key, state: State)] {
        let rid = resources.id(resource)
        return forget { key, _ in key.resourceID == rid }
    }

    /// Forgets the series `gone` picks, and the resources left without a
    /// series; returns what was forgotten.
    mutating func forget(where gone: (Key, State) -> Bool) -> [(key: Key, state: State)] {
        var forgotten: [(key: Key, state: State)] = []
        for (k, v) in states where gone(k, v) { forgotten.append((k, v)) }
        for f in forgotten { states[f.key] = nil }
        if resources.count > states.count { resources.retain(only: Set(states.keys.map(\.resourceID))) }
        return forgotten
    }
}

/// The per-series state of a detector that raises and resolves events
/// (`threshold`, `anomaly`, `goroutine_leak`).
protocol DetectorState {
    /// When the series last reported (the pipeline's clock).
    var seen: UInt64 { get }
    /// Whether an event was raised and not yet resolved.
    var isFiring: Bool { get }
}

extension SeriesTable where State: DetectorState {
    /// Forgets an exited process's series; returns those that were firing, to
    /// be resolved.
    mutating func forgetFiring(process resource: Resource) -> [(key: Key, state: State)] {
        forget(process: resource).filter { $0.state.isFiring }
    }

    /// Forgets the series that have not reported for longer than `stale`;
    /// returns those that were firing, to be resolved.
    mutating func forgetStale(now: UInt64, after stale: UInt64) -> [(key: Key, state: State)] {
        forget { _, v in now > v.seen && now - v.seen > stale }.filter { $0.state.isFiring }
    }
}
