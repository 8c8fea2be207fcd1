import CPUProfiling
import Foundation
import GoIntrospection
import Pprof

/// A census written as Go's `goroutine` profile (profile.proto, as
/// runtime/pprof writes it at debug=0): period type and sample type
/// `goroutine/count`, period 1, one sample per stack with its goroutine count.
/// `go tool pprof` reads it like the profile of `/debug/pprof/goroutine`.
///
/// Stacks are the census's: one location per physical frame (its address is
/// the call, one byte before the return address, as Go writes it), the frames
/// inlined there as the location's lines, innermost first, and runtime.goexit
/// left out. System goroutines are left out, as Go leaves them out. A running
/// goroutine, whose registers are on a CPU, stands at its start function.
///
/// Unlike Go's, each sample carries string labels naming its group, so `-tags`
/// and `-tagfocus` split the profile the way the goroutines plugin's metrics
/// do: `goroutine.state`, `goroutine.start` (the function it was started to
/// run), `goroutine.creator` and `goroutine.creator.location`. A sampled
/// census (past max_goroutines) is scaled back to the whole.
public enum GoroutineProfile {
    /// The label keys, in the order they are written.
    public static let labelKeys = ["goroutine.state", "goroutine.start", "goroutine.creator", "goroutine.creator.location"]

    public struct Output: Sendable {
        /// Gzipped profile.proto.
        public var data: [UInt8]
        /// Goroutines in the profile (scaled when the census was sampled).
        public var goroutines: Int64
        /// Distinct samples (stack and labels).
        public var samples: Int
    }

    /// Builds the profile of `result`, taken at `timeNanos` (Unix nanoseconds).
    /// `mainMapping` is the executable's text mapping (see ``executableMapping(pid:)``).
    public static func build(census: GoroutineCensus, result: GoroutineCensusResult, timeNanos: Int64,
                             mainMapping: PprofMappingInfo?) throws -> Output {
        let builder = PprofBuilder(sampleTypes: [("goroutine", "count")], periodType: ("goroutine", "count"), period: 1,
                                   timeNanos: timeNanos, durationNanos: 0)
        // Every location is symbolized here (pclntab), stripped or not: pprof
        // need not look for the binary.
        let mapping = mainMapping.map { m -> PprofMappingInfo in
            var m = m
            m.hasFunctions = true
            return m
        }
        if let mapping { builder.setMainMapping(mapping) }
        let scale = result.sampled && result.readGs > 0 ? Double(result.allocatedGs) / Double(result.readGs) : 1
        // Goroutines with the same stack and group share one sample.
        struct Key: Hashable { var stack: [UInt64]; var labels: [String] }
        var counts: [Key: Int] = [:]
        var first: [Key: GoroutineRecord] = [:]
        for r in result.goroutines where !r.isSystem {
            let site = census.createdBy(r)
            let labels = [r.state, census.entryFunction(r), site?.function ?? census.creatorFunction(r) ?? "",
                          site.map { "\($0.file):\($0.line)" } ?? ""]
            let key = Key(stack: r.stack.isEmpty ? [r.startPC] : r.stack, labels: labels)
            counts[key, default: 0] += 1
            if first[key] == nil { first[key] = r }
        }
        var total: Int64 = 0
        for (key, n) in counts.sorted(by: { $0.value > $1.value }) {
            let r = first[key]!
            var stack: [PprofStackElement] = []
            if r.stack.isEmpty {
                stack.append((r.startPC, mapping, [PprofFrame(function: census.startFunction(r))]))
            } else {
                for (_, frames) in census.physicalFrames(of: r.stack) {
                    let logical = frames.filter { $0.function != "runtime.goexit" }
                    guard let innermost = logical.first else { continue }
                    stack.append((innermost.pc &- 1, mapping,
                                  logical.map { PprofFrame(function: $0.function, file: $0.file, line: $0.line) }))
                }
            }
            guard !stack.isEmpty else { continue }
            let value = Int64((Double(n) * scale).rounded())
            total += value
            var labels: [String: String] = [:]
            for (k, v) in zip(labelKeys, key.labels) where !v.isEmpty { labels[k] = v }
            builder.addSample(stack: stack, values: [value], labels: labels)
        }
        return Output(data: try builder.gzippedData(), goroutines: total, samples: counts.count)
    }

    /// The mapping of the process's executable, pprof's mapping 1.
    public static func executableMapping(pid: Int32) -> PprofMappingInfo? {
        ProfileAssembler.executableMapping(pid: pid)
    }
}
