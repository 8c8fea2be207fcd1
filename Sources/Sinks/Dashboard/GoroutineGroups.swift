import FerretCore
import Pprof

/// The goroutines view of one process (issue #19): the groups of its latest
/// census as the goroutines collector reported them (its top groups and
/// "other", by start function, creator, creation site and state), each with
/// its count, growth rate and oldest wait, a trend from the history, the
/// stacks of its goroutines from the latest goroutine profile (matched by the
/// profile's group labels), and whether the active leak alert names it.
struct GoroutineGroups {
    static let countMetric = "go.goroutine.group.count"
    /// The group series' attribute keys in the order DashboardState writes them
    /// (sorted "k=v" texts: "creator.location=" sorts before "creator=").
    static let attributeKeys = ["go.goroutine.creator.location", "go.goroutine.creator", "go.goroutine.start", "go.goroutine.state"]

    struct Group {
        var start = "", creator = "", location = "", state = ""
        var attributes = ""
        var count = 0.0
        var growthRate: Double?
        var oldestWait: Double?
        var trend: [MetricHistory.Point] = []
        var stacks: [(count: Int64, frames: [PprofFrame])] = []
        var leaking = false

        /// The way the leak event names a group ("… [state]: before -> now").
        var leakText: String {
            "\(start) created by \(creator)" + (location.isEmpty ? "" : " at \(location)") + " [\(state)]:"
        }
    }

    var groups: [Group] = []
    var censusTime: Int64?
    var profileTime: Int64?
    var leak: DashboardState.EventInfo?

    /// The series' attribute text ("k=v,…" sorted by key, as DashboardState
    /// writes it) back into the four values; the keys are known, so a value
    /// holding a comma (a generic function's name) stays whole.
    static func parse(_ attributes: String) -> Group? {
        var g = Group(attributes: attributes)
        var rest = Substring(attributes)
        for (i, key) in attributeKeys.enumerated() {
            guard rest.hasPrefix(key + "=") else { return nil }
            rest = rest.dropFirst(key.count + 1)
            let value: Substring
            if i + 1 < attributeKeys.count {
                guard let end = rest.range(of: "," + attributeKeys[i + 1] + "=") else { return nil }
                value = rest[..<end.lowerBound]
                rest = rest[rest.index(after: end.lowerBound)...]
            } else {
                value = rest
            }
            switch i {
            case 0: g.location = String(value)
            case 1: g.creator = String(value)
            case 2: g.start = String(value)
            default: g.state = String(value)
            }
        }
        return g
    }

    init(state: DashboardState, pid: Int64, from: Int64, to: Int64, points: Int, stacksPerGroup: Int = 3) {
        let history = state.history
        let all = history.series { $0.pid == pid && $0.name.hasPrefix("go.goroutine.group.") }
        let counts = all.filter { $0.key.name == Self.countMetric }
        guard let latest = counts.map(\.lastTime).max() else { return }
        censusTime = latest
        // One census's points share its time; a group missing from it is gone.
        var byAttributes: [String: Int] = [:]
        for s in counts where s.lastTime >= latest - 1000 {
            guard var g = Self.parse(s.key.attributes) else { continue }
            g.count = s.last
            g.trend = history.query(s.key, from: from, to: to, maxPoints: points)
            byAttributes[s.key.attributes] = groups.count
            groups.append(g)
        }
        for s in all where s.lastTime >= latest - 1000 {
            guard let i = byAttributes[s.key.attributes] else { continue }
            if s.key.name == "go.goroutine.group.growth_rate" { groups[i].growthRate = s.last }
            if s.key.name == "go.goroutine.group.oldest_wait" { groups[i].oldestWait = s.last }
        }
        // Stacks from the profile, by the labels the profile gives each sample.
        if let profile = state.profile(pid: pid, type: "goroutine"), let decoded = try? PprofFile.decode(profile.data) {
            profileTime = profile.start
            var samples: [String: [(count: Int64, frames: [PprofFrame])]] = [:]
            for s in PprofFile.labeledSamples(decoded) {
                let attrs = Self.attributeKeys.map { k in "\(k)=\(s.labels[String(k.dropFirst("go.".count))] ?? "")" }.joined(separator: ",")
                samples[attrs, default: []].append((s.value, s.frames))
            }
            for i in groups.indices {
                groups[i].stacks = Array((samples[groups[i].attributes] ?? []).sorted { $0.count > $1.count }.prefix(stacksPerGroup))
            }
        }
        // The active leak alert, and the groups it names.
        leak = state.activeAlerts.first { $0.pid == pid && $0.name == "go.goroutine.leak" }
        if let leak, let named = leak.attributes.first(where: { $0.key == "go.goroutine.leak.groups" })?.value.text {
            let lines = named.split(separator: "\n").map(String.init)
            for i in groups.indices where lines.contains(where: { $0.hasPrefix(groups[i].leakText) }) { groups[i].leaking = true }
        }
        groups.sort { $0.count != $1.count ? $0.count > $1.count : $0.start < $1.start }
    }

    /// `{"census_time","profile_time","leak":{…}|null,"groups":[…]}`.
    func write(_ w: inout JSONWriter) {
        w.raw("{\"census_time\":"); w.int(censusTime)
        w.key("profile_time"); w.int(profileTime)
        w.key("leak")
        if let leak {
            w.raw("{\"time\":"); w.int(leak.time)
            w.key("body"); w.string(leak.body)
            w.byte(UInt8(ascii: "}"))
        } else {
            w.raw("null")
        }
        w.key("groups")
        w.array(groups) { w, g in
            w.raw("{\"start\":"); w.string(g.start)
            w.key("creator"); w.string(g.creator)
            w.key("location"); w.string(g.location)
            w.key("state"); w.string(g.state)
            w.key("attributes"); w.string(g.attributes)
            w.key("count"); w.double(g.count)
            w.key("growth_rate"); if let v = g.growthRate { w.double(v) } else { w.raw("null") }
            w.key("oldest_wait"); if let v = g.oldestWait { w.double(v) } else { w.raw("null") }
            w.key("leaking"); w.bool(g.leaking)
            w.key("trend")
            w.array(g.trend) { w, p in
                w.byte(UInt8(ascii: "[")); w.int(p.time); w.byte(UInt8(ascii: ",")); w.double(p.last); w.byte(UInt8(ascii: "]"))
            }
            w.key("stacks")
            w.array(g.stacks) { w, s in
                w.raw("{\"count\":"); w.int(s.count)
                w.key("frames")
                w.array(s.frames) { w, f in
                    w.raw("{\"function\":"); w.string(f.function)
                    w.key("file"); w.string(f.file)
                    w.key("line"); w.int(Int64(f.line))
                    w.byte(UInt8(ascii: "}"))
                }
                w.byte(UInt8(ascii: "}"))
            }
            w.byte(UInt8(ascii: "}"))
        }
        w.byte(UInt8(ascii: "}"))
    }
}
