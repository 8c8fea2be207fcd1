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
        /// Samples written (same-stack groups; the builder merges equal ones).
        public var samples: Int
    }

    /// Builds the profile of `result`, taken at `timeNanos` (Unix nanoseconds).
    /// `mainMapping` is the executable's text mapping (see ``executableMapping(pid:)``).
    /// `groups` are `census.stackGroups(result)` when the caller has them already.
    public static func build(census: GoroutineCensus, result: GoroutineCensusResult, groups: [GoroutineStackGroup]? = nil,
                             timeNanos: Int64, mainMapping: PprofMappingInfo?) throws -> Output {
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
        let scale = result.scale
        var total: Int64 = 0
        var samples = 0
        // Groups with the same stack and names (two creation PCs in one line) merge in the builder.
        for g in groups ?? census.stackGroups(result) {
            let r = g.representative
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
            let value = Int64((Double(g.count) * scale).rounded())
            total += value
            samples += 1
            var labels: [String: String] = [:]
            for (k, v) in zip(labelKeys, [g.state, g.entry, g.creator, g.location]) where !v.isEmpty { labels[k] = v }
            builder.addSample(stack: stack, values: [value], labels: labels)
        }
        return Output(data: try builder.gzippedData(), goroutines: total, samples: samples)
    }

    /// The mapping of the process's executable, pprof's mapping 1.
    public static func executableMapping(pid: Int32) -> PprofMappingInfo? {
        ProfileAssembler.executableMapping(pid: pid)
    }
}
