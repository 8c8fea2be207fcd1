/// One time series: a metric name, its point attributes and the process (or
/// agent) it came from, the latter as a small number from a `ResourceTable`.
public struct SeriesKey: Hashable, Sendable {
    public var name: String
    public var attributes: [Attribute]
    public var resource: Int

    public init(name: String, attributes: [Attribute], resource: Int) {
        self.name = name
        self.attributes = attributes
        self.resource = resource
    }

    /// Attribute keys are left out of the hash: the series of one metric share
    /// them, so they would cost a hash per point without telling series apart.
    public func hash(into h: inout Hasher) {
        h.combine(resource)
        h.combine(name)
        h.combine(attributes.count)
        for a in attributes { h.combine(a.value) }
    }
}

/// Gives each distinct resource a small number. Resources are shared by
/// reference, so the usual lookup is by object; a new object with the same
/// attributes as a known one (e.g. after a config reload) gets the same number.
/// The table holds every object it has numbered, so an object identifier is
/// never reused for another resource while it is known.
/// Used from the pipeline's dispatcher thread only.
public final class ResourceTable {
    public init() {}

    private var byObject: [ObjectIdentifier: Int] = [:]
    private var byContent: [[UInt8]: Int] = [:]
    private var entries: [Int: (resource: Resource, objects: [Resource])] = [:]
    private var nextID = 1
    private var lastObject: ObjectIdentifier?
    private var lastID = 0

    public var count: Int { entries.count }

    @inline(__always)
    public func id(_ r: Resource) -> Int {
        let o = ObjectIdentifier(r)
        if o == lastObject { return lastID }
        let id = byObject[o] ?? intern(r, o)
        lastObject = o
        lastID = id
        return id
    }

    private func intern(_ r: Resource, _ o: ObjectIdentifier) -> Int {
        if let id = byContent[r.json] {
            byObject[o] = id
            entries[id]?.objects.append(r)
            return id
        }
        let id = nextID
        nextID += 1
        byContent[r.json] = id
        byObject[o] = id
        entries[id] = (r, [r])
        return id
    }

    /// The first resource object seen with this number.
    public func resource(_ id: Int) -> Resource { entries[id]?.resource ?? .empty }

    /// Forgets every resource whose number is not in `ids` (no series uses it).
    public func retain(only ids: Set<Int>) {
        guard entries.count > ids.count else { return }
        for (id, e) in entries where !ids.contains(id) {
            entries[id] = nil
            byContent[e.resource.json] = nil
            for o in e.objects { byObject[ObjectIdentifier(o)] = nil }
        }
        lastObject = nil
    }
}

extension AttributeValue {
    /// The value as a number, when it is one.
    public var number: Double? {
        switch self {
        case .int(let i): Double(i)
        case .double(let d): d
        case .string, .bool: nil
        }
    }

    public var text: String {
        switch self {
        case .string(let s): s
        case .int(let i): String(i)
        case .double(let d): String(d)
        case .bool(let b): b ? "true" : "false"
        }
    }
}

/// Seconds between two point times (0 when they go backwards).
@inline(__always)
public func seconds(from a: UInt64, to b: UInt64) -> Double {
    b > a ? Double(b - a) / 1e9 : 0
}
