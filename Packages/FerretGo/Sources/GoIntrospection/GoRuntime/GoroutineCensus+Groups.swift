import GoBinaryFormat

/// The user goroutines of one census that share a start PC, a creation PC, a
/// state and a stack: the same code in the same place. Names are looked up
/// once per group, not once per goroutine (10,000 goroutines parked in the
/// same place are one lookup), for the collector's groups and the profile.
public struct GoroutineStackGroup: Sendable {
    /// One of the goroutines (the first read).
    public var representative: GoroutineRecord
    public var count: Int
    /// The smallest `waitSince` among them that is set (0 when none is).
    public var earliestWaitSince: Int64
    /// ``GoroutineCensus/entryFunction(_:frames:)``: what they were started to run.
    public var entry: String
    /// The creator's name (shown in a traceback or not; "" for none).
    public var creator: String
    /// The creation site as "file:line", when the traceback would print one.
    public var location: String
    /// The traceback header's state ("chan receive", "running", ...).
    public var state: String { representative.state }
}

extension GoroutineCensus {
    /// The user goroutines of `result` by (start PC, creation PC, state, stack),
    /// largest group first. System goroutines are left out, as Go leaves them out.
    public func stackGroups(_ result: GoroutineCensusResult) -> [GoroutineStackGroup] {
        struct Key: Hashable {
            var start, creation: UInt64
            var state: String
            var stack: [UInt64]
        }
        var index: [Key: Int] = [:]
        var groups: [GoroutineStackGroup] = []
        for r in result.goroutines where !r.isSystem {
            let key = Key(start: r.startPC, creation: r.creationPC, state: r.state, stack: r.stack)
            if let i = index[key] {
                groups[i].count += 1
                if r.waitSince != 0 && (groups[i].earliestWaitSince == 0 || r.waitSince < groups[i].earliestWaitSince) {
                    groups[i].earliestWaitSince = r.waitSince
                }
                continue
            }
            let site = createdBy(r)
            index[key] = groups.count
            groups.append(GoroutineStackGroup(representative: r, count: 1, earliestWaitSince: r.waitSince, entry: entryFunction(r),
                                              creator: site?.function ?? creatorFunction(r) ?? "",
                                              location: site.map { "\($0.file):\($0.line)" } ?? ""))
        }
        return groups.sorted { $0.count > $1.count }
    }
}
