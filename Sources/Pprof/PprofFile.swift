import Foundation
import SwiftProtobuf

/// Reading a pprof file back (for `ferret profile --format collapsed` and tests).
public enum PprofFile {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Decodes a gzipped (or plain) profile.proto.
    public static func decode(_ bytes: [UInt8]) throws -> Perftools_Profiles_Profile {
        let raw = bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b ? try Gzip.decompress(bytes) : bytes
        do {
            return try Perftools_Profiles_Profile(serializedBytes: raw)
        } catch {
            throw Failure(description: "not a pprof profile: \(error)")
        }
    }

    /// The samples of a profile as stacks of frame names, outermost first, with
    /// their first sample value; inlined frames are entries of their own.
    /// Frames without a function name read `<file name>+0x<file offset>` (or
    /// `0x<address>` without a mapping). Samples with an empty stack are left out.
    public static func stacks(_ p: Perftools_Profiles_Profile) -> [(frames: [String], value: Int64)] {
        func str(_ i: Int64) -> String { i >= 0 && Int(i) < p.stringTable.count ? p.stringTable[Int(i)] : "" }
        var functions: [UInt64: String] = [:]
        for f in p.function { functions[f.id] = str(f.name) }
        var mappings: [UInt64: Perftools_Profiles_Mapping] = [:]
        for m in p.mapping { mappings[m.id] = m }
        var names: [UInt64: [String]] = [:] // location id -> frame names, innermost first
        for l in p.location {
            var n = l.line.map { functions[$0.functionID] ?? "?" }
            if n.isEmpty {
                if let m = mappings[l.mappingID], !str(m.filename).isEmpty {
                    let base = str(m.filename).split(separator: "/").last.map(String.init) ?? str(m.filename)
                    n = [base + "+0x" + String(l.address &- m.memoryStart &+ m.fileOffset, radix: 16)]
                } else {
                    n = ["0x" + String(l.address, radix: 16)]
                }
            }
            names[l.id] = n
        }
        return p.sample.filter { !$0.locationID.isEmpty }.map { s in
            var stack: [String] = []
            for id in s.locationID.reversed() { stack += (names[id] ?? ["?"]).reversed() }
            return (stack, s.value.first ?? 0)
        }
    }

    /// One sample with its frames as written (function, file, line), innermost
    /// first, its first value and its string labels.
    public struct LabeledSample: Sendable {
        public var frames: [PprofFrame]
        public var value: Int64
        public var labels: [String: String]
    }

    /// The samples of a profile with their source frames and string labels
    /// (the goroutine profile's group labels). A location without lines gives
    /// one frame named by its address.
    public static func labeledSamples(_ p: Perftools_Profiles_Profile) -> [LabeledSample] {
        func str(_ i: Int64) -> String { i >= 0 && Int(i) < p.stringTable.count ? p.stringTable[Int(i)] : "" }
        var functions: [UInt64: (name: String, file: String)] = [:]
        for f in p.function { functions[f.id] = (str(f.name), str(f.filename)) }
        var frames: [UInt64: [PprofFrame]] = [:]
        for l in p.location {
            let fs = l.line.map { line -> PprofFrame in
                let f = functions[line.functionID] ?? ("?", "")
                return PprofFrame(function: f.name, file: f.file, line: Int(line.line))
            }
            frames[l.id] = fs.isEmpty ? [PprofFrame(function: "0x" + String(l.address, radix: 16))] : fs
        }
        return p.sample.map { s in
            var labels: [String: String] = [:]
            for l in s.label where l.str != 0 { labels[str(l.key)] = str(l.str) }
            return LabeledSample(frames: s.locationID.flatMap { frames[$0] ?? [] }, value: s.value.first ?? 0, labels: labels)
        }
    }

    /// Collapsed stacks of a profile, in the same form as `PprofBuilder.collapsed()`:
    /// `root;caller;leaf value` per distinct stack (first sample value), inlined
    /// frames as entries of their own, sorted.
    public static func collapsed(_ p: Perftools_Profiles_Profile) -> String {
        var totals: [String: Int64] = [:]
        for s in stacks(p) {
            totals[s.frames.map { $0.replacingOccurrences(of: ";", with: ":") }.joined(separator: ";"), default: 0] += s.value
        }
        return totals.keys.sorted().map { "\($0) \(totals[$0]!)\n" }.joined()
    }
}
