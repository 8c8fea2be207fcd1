// goroutines: a census of every Go process's goroutines, read from outside it
// through GoIntrospection's GoroutineCensus (process_vm_readv only: no stop, no
// write, no injection). Every census_interval it emits the goroutines by state
// and by wait reason, and the top groups by (start function, creator and its
// call site, state) with their count, growth rate and oldest wait; the rest is
// summed as one "other" group so the series stay bounded.
import FerretPluginKit
import Foundation
import GoIntrospection
import GoroutineProfiling
import Pprof

public final class GoroutineCollector: FerretCollector {
    public static let name = "goroutines"
    public static let version = "0.1.0"
    public static let summary = "Goroutine census from outside: counts by state and wait reason, top groups by start function and creator"

    public struct Settings: PluginSettings {
        /// How often each process's census is taken (default 10s; at least the collect interval).
        var census_interval: DurationSetting?
        /// Groups reported per process; the rest is summed as "other" (default 20).
        var top_groups: Int?
        /// Unwind every goroutine's stack (default true): a goroutine started by
        /// `go f(x)` runs a compiler-made closure first, and its stack says it calls f.
        /// Without stacks the groups are named by that closure (creator.gowrapN).
        var stacks: Bool?
        /// Past this many goroutines the census reads every k-th (default 200000).
        var max_goroutines: Int?
        /// At most this many bytes of stack memory are read per census (default 64MiB);
        /// past it the remaining goroutines keep their start function and creator,
        /// with no stack ("budget").
        var stack_budget: ByteSizeSetting?
        /// Emit Go's goroutine profile (pprof) with every census (default true; needs stacks).
        var profiles: Bool?

        public enum CodingKeys: String, CodingKey, CaseIterable {
            case census_interval, top_groups, stacks, max_goroutines, stack_budget, profiles
        }

        public func check() throws {
            if let n = top_groups, !(1...1000).contains(n) {
                throw PluginError.invalidConfig("top_groups must be 1 to 1000", path: "/top_groups")
            }
            if let n = max_goroutines, n < 1000 {
                throw PluginError.invalidConfig("max_goroutines must be at least 1000", path: "/max_goroutines")
            }
            if let b = stack_budget, b.bytes < 1 << 20 {
                throw PluginError.invalidConfig("stack_budget must be at least 1MiB", path: "/stack_budget")
            }
            if profiles == true && stacks == false {
                throw PluginError.invalidConfig("profiles need the stacks: set stacks: true or profiles: false", path: "/profiles")
            }
            if let d = census_interval, d.nanoseconds < 100_000_000 {
                throw PluginError.invalidConfig("census_interval must be at least 100ms", path: "/census_interval")
            }
        }
    }

    /// A group's identity: what created the goroutines and what they do now.
    struct GroupKey: Hashable {
        var start: String
        var creator: String
        var location: String
        var state: String
    }

    private struct Target {
        var comm: String
        var census: GoroutineCensus
        var lastCensus: UInt64 = 0
        var previous: [GroupKey: Int] = [:]
        var previousTime: UInt64 = 0
        var saidSampled = false
        var saidBudget = false
        var mapping: PprofMappingInfo?
    }

    private let emit: Emitter
    private let interval: UInt64
    private let topGroups: Int
    private let options: GoroutineCensus.Options
    private let profiles: Bool
    private var targets: [Int32: Target] = [:]

    public init(context: PluginContext) throws {
        let s = try context.settings(Settings.self)
        interval = s.census_interval?.nanoseconds ?? 10_000_000_000
        topGroups = s.top_groups ?? 20
        var o = GoroutineCensus.Options(stacks: s.stacks ?? true, maxGoroutines: s.max_goroutines ?? 200_000)
        if let b = s.stack_budget { o.stackBudget = b.bytes }
        options = o
        profiles = s.profiles ?? o.stacks
        emit = context.emit
    }

    public func attach(_ target: PluginTarget) throws {
        guard target.isGo else { return }
        do {
            let binary = try GoBinaryCache.binary(path: "\(HostProc.path)/\(target.pid)/exe")
            targets[target.pid] = Target(comm: target.comm, census: try GoroutineCensus(pid: target.pid, binary: binary),
                                         mapping: profiles ? GoroutineProfile.executableMapping(pid: target.pid) : nil)
        } catch {
            emit.events([PluginEvent(name: IntrospectionError.eventName(for: error), severity: .warn,
                                     body: "pid \(target.pid) (\(target.comm)): goroutine census unavailable: \(error)",
                                     pid: target.pid, attributes: [("reason", .string("\(error)"))])])
        }
    }

    public func detach(pid: Int32) throws {
        targets.removeValue(forKey: pid)
    }

    public func collect(now: UInt64) throws {
        var points: [Metric] = []
        var events: [PluginEvent] = []
        let mono = UInt64(GoroutineCensus.monotonicNow())
        for pid in targets.keys.sorted() {
            guard var t = targets[pid], t.lastCensus == 0 || mono &- t.lastCensus >= interval - interval / 20 else { continue }
            t.lastCensus = mono
            let started = GoroutineCensus.monotonicNow()
            let result: GoroutineCensusResult
            do {
                result = try t.census.take(options)
            } catch let e as ProcessReadError {
                if case .exited = e { continue }
                emit.log(.warn, "pid \(pid): goroutine census failed: \(e)")
                continue
            } catch {
                emit.log(.warn, "pid \(pid): goroutine census failed: \(error)")
                continue
            }
            let took = Double(GoroutineCensus.monotonicNow() - started) / 1e9
            if result.sampled && !t.saidSampled {
                t.saidSampled = true
                events.append(PluginEvent(name: "go.goroutine.census.sampled", severity: .info,
                                          body: "pid \(pid) (\(t.comm)): \(result.allocatedGs) goroutines allocated; the census reads every "
                                              + "\(max(1, result.allocatedGs / max(1, result.readGs)))th (max_goroutines \(options.maxGoroutines))",
                                          pid: pid, attributes: [("go.goroutine.allocated", .int(Int64(result.allocatedGs))),
                                                                 ("go.goroutine.read", .int(Int64(result.readGs)))]))
            }
            let budgetCut = result.goroutines.filter { $0.stackState == .budget }.count
            if budgetCut > 0 && !t.saidBudget {
                t.saidBudget = true
                events.append(PluginEvent(name: "go.goroutine.census.budget", severity: .info,
                                          body: "pid \(pid) (\(t.comm)): the stack budget (\(options.stackBudget) bytes per census) ran out; "
                                              + "\(budgetCut) goroutines are counted by start function and creator, without a stack",
                                          pid: pid, attributes: [("go.goroutine.unstacked", .int(Int64(budgetCut))),
                                                                 ("stack_budget", .int(Int64(options.stackBudget)))]))
            }
            let groups = t.census.stackGroups(result)
            points += metrics(pid: pid, result: result, groups: groups, target: &t, now: mono)
            if profiles { profile(pid: pid, census: t.census, result: result, groups: groups, mapping: t.mapping) }
            points.append(.gauge("go.goroutine.census.duration", took, unit: "s", pid: pid))
            points.append(.gauge("go.goroutine.census.changed", Double(result.changed), unit: "{goroutine}", pid: pid))
            points.append(.gauge("go.goroutine.census.read", Double(result.bytesRead), unit: "By", pid: pid))
            targets[pid] = t
        }
        if !events.isEmpty { emit.events(events) }
        if !points.isEmpty { emit.metrics(points) }
    }

    /// Go's goroutine profile of this census, as runtime/pprof writes it (labelled by group).
    private func profile(pid: Int32, census: GoroutineCensus, result: GoroutineCensusResult, groups: [GoroutineStackGroup],
                         mapping: PprofMappingInfo?) {
        let now = UInt64(Date().timeIntervalSince1970 * 1e9)
        do {
            let p = try GoroutineProfile.build(census: census, result: result, groups: groups, timeNanos: Int64(now), mainMapping: mapping)
            emit.profile(pid: pid, type: "goroutine", data: p.data, startUnixNano: now, durationNano: 0, samples: p.goroutines)
        } catch {
            emit.log(.warn, "pid \(pid): goroutine profile not built: \(error)")
        }
    }

    private func metrics(pid: Int32, result: GoroutineCensusResult, groups stackGroups: [GoroutineStackGroup], target t: inout Target,
                         now: UInt64) -> [Metric] {
        // A sampled census stands for every k-th G: scale its counts back.
        let scale = result.scale
        var points: [Metric] = []
        var byState: [String: Int] = [:], byReason: [String: Int] = [:]
        var groups: [GroupKey: (count: Int, oldest: Int64)] = [:]
        for s in stackGroups {
            let r = s.representative
            byState[r.statusName, default: 0] += s.count
            if let w = r.waitReason { byReason[w, default: 0] += s.count }
            let key = GroupKey(start: s.entry, creator: s.creator, location: s.location, state: s.state)
            let waited = s.earliestWaitSince != 0 ? max(0, result.nanotime - s.earliestWaitSince) : 0
            let g = groups[key] ?? (0, 0)
            groups[key] = (g.count + s.count, max(g.oldest, waited))
        }
        for (state, n) in byState.sorted(by: { $0.key < $1.key }) {
            points.append(.gauge("go.goroutine.state.count", Double(n) * scale, unit: "{goroutine}", pid: pid,
                                 attributes: [("go.goroutine.state", .string(state))]))
        }
        for (reason, n) in byReason.sorted(by: { $0.key < $1.key }) {
            points.append(.gauge("go.goroutine.wait_reason.count", Double(n) * scale, unit: "{goroutine}", pid: pid,
                                 attributes: [("go.goroutine.wait_reason", .string(reason))]))
        }
        let ranked = groups.sorted { $0.value.count != $1.value.count ? $0.value.count > $1.value.count : $0.key.start < $1.key.start }
        let elapsed = t.previousTime == 0 ? 0 : Double(now &- t.previousTime) / 1e9
        var current: [GroupKey: Int] = [:]
        var other = (count: 0, oldest: Int64(0), previous: 0)
        for (i, (key, g)) in ranked.enumerated() {
            current[key] = g.count
            guard i < topGroups else {
                other.count += g.count
                other.oldest = max(other.oldest, g.oldest)
                other.previous += t.previous[key] ?? 0
                continue
            }
            points += groupPoints(pid: pid, key: key, count: g.count, oldest: g.oldest, previous: t.previous[key], elapsed: elapsed, scale: scale)
        }
        if other.count > 0 {
            points += groupPoints(pid: pid, key: GroupKey(start: "other", creator: "other", location: "", state: "other"), count: other.count,
                                  oldest: other.oldest, previous: other.previous, elapsed: elapsed, scale: scale)
        }
        t.previous = current
        t.previousTime = now
        return points
    }

    private func groupPoints(pid: Int32, key: GroupKey, count: Int, oldest: Int64, previous: Int?, elapsed: Double, scale: Double) -> [Metric] {
        let attrs: [(String, AttrValue)] = [("go.goroutine.start", .string(key.start)), ("go.goroutine.creator", .string(key.creator)),
                                            ("go.goroutine.creator.location", .string(key.location)),
                                            ("go.goroutine.state", .string(key.state))]
        var out: [Metric] = [
            .gauge("go.goroutine.group.count", Double(count) * scale, unit: "{goroutine}", pid: pid, attributes: attrs),
            .gauge("go.goroutine.group.oldest_wait", Double(oldest) / 1e9, unit: "s", pid: pid, attributes: attrs),
        ]
        if elapsed > 0 {
            out.append(.gauge("go.goroutine.group.growth_rate", Double(count - (previous ?? 0)) * scale / elapsed, unit: "{goroutine}/s",
                              pid: pid, attributes: attrs))
        }
        return out
    }
}

@_cdecl("ferret_plugin_entry") public func ferretPluginEntry(_ major: UInt32, _ minor: UInt32, _ host: UnsafePointer<ferret_host_api>?) -> UnsafeRawPointer? { FerretExport.entry(GoroutineCollector.self, major, minor, host) }
