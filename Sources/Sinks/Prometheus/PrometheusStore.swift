import FerretCore
import FerretHTTPServer
import Foundation

/// The latest value of every series the `prometheus` sink exposes.
///
/// Written from the sink runner's thread (`apply`), read by scrapes on the
/// HTTP server's threads (`render`): all state is behind one lock. Each
/// series' label set is rendered once, when the series is created, and is
/// also its key; a scrape only appends bytes and formats numbers.
///
/// Series go away (and Prometheus, no longer seeing them, marks them stale)
/// when their process exits (the `process.exit` event) or when they have not
/// been updated for `expireAfter`. Points that arrive late from an exited
/// process (same resource) are ignored for `expireAfter`, so they cannot bring
/// its series back.
public final class PrometheusStore: @unchecked Sendable {
    public struct Options: Sendable, Equatable {
        /// Resource attribute keys that become labels, in this order.
        public var resourceLabels: [String]
        public var expireAfterNanos: UInt64

        public static let defaultResourceLabels = ["ferret.group", "ferret.rule", "process.pid", "process.executable.name", "host.name"]

        public init(resourceLabels: [String] = defaultResourceLabels, expireAfterNanos: UInt64 = 300_000_000_000) {
            self.resourceLabels = resourceLabels
            self.expireAfterNanos = expireAfterNanos
        }
    }

    final class Family {
        let name: String
        let kind: MetricKind
        /// `name_total` for counters, `name` otherwise.
        let sampleName: [UInt8]
        let headerText: [UInt8]
        let headerOpenMetrics: [UInt8]
        var series: [String: Series] = [:]
        /// Creation order, for a stable exposition; removed entries are skipped
        /// and compacted away.
        var order: [Series] = []
        var removedInOrder = 0
        /// Counts compactions of `order`, so a scrape in progress can find its place again.
        var generation = 0
        /// The next series' `seq`: `order` is always sorted by it.
        var nextSeq = 0

        init(name: String, kind: MetricKind, otelName: String, otelUnit: String, unitWord: String) {
            self.name = name
            self.kind = kind
            let sample = kind == .counter ? name + "_total" : name
            sampleName = Array(sample.utf8)
            let help = otelUnit.isEmpty ? otelName : "\(otelName) (\(otelUnit))"
            let type = kind.rawValue
            headerText = Array("# HELP \(sample) \(PrometheusFormat.text.escapeHelp(help))\n# TYPE \(sample) \(type)\n".utf8)
            var om = "# HELP \(name) \(PrometheusFormat.openMetrics.escapeHelp(help))\n# TYPE \(name) \(type)\n"
            // OpenMetrics requires the family name to end in the unit.
            if !unitWord.isEmpty && name.hasSuffix("_" + unitWord) { om += "# UNIT \(name) \(unitWord)\n" }
            headerOpenMetrics = Array(om.utf8)
        }
    }

    final class Series {
        /// `{k="v",…}`, or empty: rendered once; also the key in its family.
        let labels: String
        /// The resource's part of the labels (what a process exit matches).
        let resourceLabels: String
        /// Creation order within the family.
        let seq: Int
        var value: Double = 0
        var histogram: HistogramData?
        var updated: UInt64 = 0
        var removed = false

        init(labels: String, resourceLabels: String, seq: Int) {
            self.labels = labels
            self.resourceLabels = resourceLabels
            self.seq = seq
        }
    }

    /// A resource's labels, rendered once per Resource object.
    struct ResourceLabels {
        let resource: Resource
        /// `k="v",…` without braces.
        let inner: String
        /// `{k="v",…}`, or empty.
        let braced: String
        let names: [String]
        var lastUsed: UInt64
    }

    private struct FamilyKey: Hashable {
        var name: String
        var unit: String
        var kind: MetricKind
    }

    public let options: Options
    /// Guards everything below (and the families' and series' fields).
    let lock = NSLock()
    private var families: [FamilyKey: Family] = [:]
    private var byName: [String: Family] = [:]
    private var sorted: [Family]?
    private var resources: [ObjectIdentifier: ResourceLabels] = [:]
    private var labelNames: [String: String] = [:]
    /// Exited processes' resources, until their deadline.
    private var tombstones: [ObjectIdentifier: (resource: Resource, until: UInt64)] = [:]
    private var seriesCount = 0
    private var lastSweep: UInt64 = 0
    private var conflictsLogged: Set<String> = []
    private var conflicts = 0
    /// Called (outside the lock) with a message the first time a name conflicts.
    private let onConflict: (@Sendable (String) -> Void)?

    /// - Parameter onConflict: told (once per name) when a metric's name maps
    ///   onto a family of another type; such points are dropped and counted.
    public init(options: Options = Options(), onConflict: (@Sendable (String) -> Void)? = nil) {
        self.options = options
        self.onConflict = onConflict
    }

    /// Points dropped because their name maps onto a family of another type.
    public var conflictCount: Int { lock.withLock { conflicts } }

    /// How many series are exposed.
    public var count: Int { lock.withLock { seriesCount } }

    // MARK: - writing

    /// Takes in a batch: metric points update their series; `process.exit`
    /// events remove the series of that process. `now` is monotonic.
    public func apply(_ batch: [Signal], now: UInt64 = Clock.monotonicNanos()) {
        var newConflicts: [String] = []
        lock.withLock {
            var exited: Set<String> = []
            for signal in batch {
                switch signal {
                case .metric(let m):
                    if !tombstones.isEmpty, tombstones[ObjectIdentifier(m.resource)] != nil { continue }
                    update(m, now: now, conflicts: &newConflicts)
                case .event(let e) where e.isProcessExit:
                    tombstones[ObjectIdentifier(e.resource)] = (e.resource, now &+ options.expireAfterNanos)
                    let r = resourceLabels(e.resource, now: now)
                    if !r.inner.isEmpty { exited.insert(r.inner) }
                    resources[ObjectIdentifier(e.resource)] = nil
                default:
                    continue
                }
            }
            if !exited.isEmpty { remove { exited.contains($0.resourceLabels) } }
            if now &- lastSweep >= sweepInterval { sweep(now: now) }
        }
        for c in newConflicts { onConflict?(c) }
    }

    /// The families in name order. Call with the lock held.
    func sortedFamilies() -> [Family] {
        if let sorted { return sorted }
        let s = byName.values.sorted { $0.name < $1.name }
        sorted = s
        return s
    }

    /// The oldest update time a series may have to be exposed at `now`.
    func cutoff(now: UInt64) -> UInt64 { now > options.expireAfterNanos ? now - options.expireAfterNanos : 0 }

    /// Removes what has expired, when a sweep is due (also without new points).
    public func maintain(now: UInt64 = Clock.monotonicNanos()) {
        lock.withLock {
            if now &- lastSweep >= sweepInterval { sweep(now: now) }
        }
    }

    private var sweepInterval: UInt64 { min(max(options.expireAfterNanos / 4, 1_000_000_000), 10_000_000_000) }

    private func update(_ m: MetricPoint, now: UInt64, conflicts newConflicts: inout [String]) {
        let fkey = FamilyKey(name: m.name, unit: m.unit, kind: m.kind)
        let family: Family
        if let f = families[fkey] {
            family = f
        } else {
            let name = PrometheusNaming.familyName(m.name, unit: m.unit, kind: m.kind)
            if let existing = byName[name] {
                guard existing.kind == m.kind else {
                    conflicts += 1
                    if conflictsLogged.insert(name).inserted {
                        newConflicts.append("'\(m.name)' (\(m.kind.rawValue)) maps to '\(name)', already a \(existing.kind.rawValue); its points are dropped")
                    }
                    return
                }
                family = existing
            } else {
                family = Family(name: name, kind: m.kind, otelName: m.name, otelUnit: m.unit,
                                unitWord: PrometheusNaming.unitSuffix(m.unit, kind: m.kind))
                byName[name] = family
                sorted = nil
            }
            families[fkey] = family
        }
        let r = resourceLabels(m.resource, now: now)
        let key = m.attributes.isEmpty ? r.braced : labels(r, m.attributes)
        let series: Series
        if let s = family.series[key] {
            series = s
        } else {
            series = Series(labels: key, resourceLabels: r.inner, seq: family.nextSeq)
            family.nextSeq += 1
            family.series[key] = series
            family.order.append(series)
            seriesCount += 1
        }
        series.value = m.value
        series.histogram = m.histogram
        series.updated = now
    }

    private func resourceLabels(_ resource: Resource, now: UInt64) -> ResourceLabels {
        let id = ObjectIdentifier(resource)
        if var r = resources[id] {
            if now &- r.lastUsed > 1_000_000_000 {
                r.lastUsed = now
                resources[id] = r
            }
            return r
        }
        var parts: [String] = []
        var names: [String] = []
        for key in options.resourceLabels {
            guard let v = resource[key] else { continue }
            let name = labelName(key)
            if names.contains(name) { continue }
            names.append(name)
            parts.append("\(name)=\"\(PrometheusFormat.escapeLabelValue(v.labelValue))\"")
        }
        let inner = parts.joined(separator: ",")
        let r = ResourceLabels(resource: resource, inner: inner, braced: inner.isEmpty ? "" : "{\(inner)}", names: names, lastUsed: now)
        resources[id] = r
        return r
    }

    private func labelName(_ key: String) -> String {
        if let n = labelNames[key] { return n }
        let n = PrometheusNaming.labelName(key)
        if labelNames.count < 10_000 { labelNames[key] = n }
        return n
    }

    /// Resource labels plus the point's attributes, sorted by label name. A point
    /// attribute replaces a resource label of the same name; attributes whose
    /// names collide after sanitising are joined with `;` (in key order), as the
    /// OTel specification says.
    private func labels(_ r: ResourceLabels, _ attributes: [Attribute]) -> String {
        var pairs: [(name: String, key: String, value: String)] = attributes.map { (labelName($0.key), $0.key, $0.value.labelValue) }
        pairs.sort { $0.name != $1.name ? $0.name < $1.name : $0.key < $1.key }
        var merged: [(name: String, value: String)] = []
        for p in pairs {
            if let last = merged.last, last.name == p.name {
                merged[merged.count - 1].value += ";" + p.value
            } else {
                merged.append((p.name, p.value))
            }
        }
        var out = "{"
        if !r.inner.isEmpty {
            if r.names.contains(where: { n in merged.contains { $0.name == n } }) {
                // Rare: rebuild the resource part without the overridden labels.
                var first = true
                for n in r.names where !merged.contains(where: { $0.name == n }) {
                    guard case let v? = r.resource.attributes.first(where: { labelName($0.key) == n })?.value else { continue }
                    if !first { out += "," }
                    first = false
                    out += "\(n)=\"\(PrometheusFormat.escapeLabelValue(v.labelValue))\""
                }
                if !first { out += "," }
            } else {
                out += r.inner
                out += ","
            }
        }
        for (i, p) in merged.enumerated() {
            if i > 0 { out += "," }
            out += p.name
            out += "=\""
            out += PrometheusFormat.escapeLabelValue(p.value)
            out += "\""
        }
        out += "}"
        return out
    }

    // MARK: - removal

    private func remove(where predicate: (Series) -> Bool) {
        for family in byName.values {
            var dropped = 0
            for s in family.order where !s.removed && predicate(s) {
                s.removed = true
                family.series[s.labels] = nil
                dropped += 1
            }
            guard dropped > 0 else { continue }
            seriesCount -= dropped
            family.removedInOrder += dropped
            if family.removedInOrder * 2 > family.order.count {
                family.order.removeAll { $0.removed }
                family.removedInOrder = 0
                family.generation += 1
            }
        }
    }

    /// Removes expired series, forgets resources not seen for a while and
    /// tombstones past their time.
    private func sweep(now: UInt64) {
        lastSweep = now
        if now > options.expireAfterNanos {
            let cutoff = now - options.expireAfterNanos
            remove { $0.updated < cutoff }
            resources = resources.filter { $0.value.lastUsed >= cutoff }
        }
        tombstones = tombstones.filter { $0.value.until > now }
        let empty = byName.filter { $0.value.series.isEmpty }
        if !empty.isEmpty {
            for (name, _) in empty { byName[name] = nil }
            families = families.filter { !$0.value.series.isEmpty }
            sorted = nil
        }
    }
}

extension AttributeValue {
    /// The value as a label value (before escaping).
    fileprivate var labelValue: String {
        switch self {
        case .string(let s): s
        case .int(let i): String(i)
        case .double(let d): d.description
        case .bool(let b): b ? "true" : "false"
        }
    }
}
