import SwiftProtobuf

/// Builds one pprof profile (profile.proto) from sampled stacks, the way Go's
/// runtime/pprof writes a CPU profile, so that `go tool pprof` reads it as one
/// of Go's own.
///
/// Mappings, locations, functions and strings are interned as samples arrive
/// (hash lookups, O(stack depth) per sample); samples with the same stack and
/// labels are merged, their values added. Ids start at 1 and
/// `string_table[0] == ""`. Mapping 1 is the main executable when
/// `setMainMapping(_:)` named it, otherwise the first mapping used.
///
/// Not thread-safe: one builder belongs to one thread at a time.
public final class PprofBuilder {
    /// The meaning of each sample value; `addSample`'s values follow this order.
    public let sampleTypes: [(type: String, unit: String)]
    public let periodType: (type: String, unit: String)
    /// Events between two samples, in `periodType`'s unit.
    public let period: Int64
    /// Start of the profile, nanoseconds since the Unix epoch.
    public var timeNanos: Int64
    /// Length of the profiled window in nanoseconds.
    public var durationNanos: Int64

    /// Number of `addSample` calls so far (merged samples count each time).
    public private(set) var sampleCount = 0

    // The string table: strings[i] has index i; strings[0] == "".
    private var strings: [String] = [""]
    private var stringIndex: [String: Int64] = ["": 0]

    private struct MappingKey: Hashable {
        var start, limit, offset: UInt64
        var file: String
    }
    private struct MappingEntry {
        var info: PprofMappingInfo
        var filename, buildID: Int64
        var hasFunctions: Bool
        var hasFilenames = false, hasLineNumbers = false, hasInlineFrames = false
    }
    // Internal mapping indices; final ids are given in build() (main mapping first).
    private var mappings: [MappingEntry] = []
    private var mappingIndex: [MappingKey: Int] = [:]
    private var mainMapping: Int?
    // Consecutive frames mostly share a mapping: skip the hash lookup then.
    private var lastMapping: (info: PprofMappingInfo, index: Int)?

    private struct LocationKey: Hashable {
        var address: UInt64
        var mapping: Int  // -1: none
    }
    private struct LocationEntry {
        var address: UInt64
        var mapping: Int?
        var lines: [(function: UInt64, line: Int64)]
        /// Function names, innermost first (the collapsed and top views).
        var names: [String]
    }
    // Location id = index + 1.
    private var locations: [LocationEntry] = []
    private var locationIndex: [LocationKey: Int] = [:]

    private struct FunctionKey: Hashable {
        var name, file: String
        var startLine: Int
    }
    // Function id = index + 1.
    private var functions: [Perftools_Profiles_Function] = []
    private var functionIndex: [FunctionKey: Int] = [:]

    private struct SampleKey: Hashable {
        var locations: [UInt64]
        var labels: [String: String]
    }
    private struct SampleEntry {
        var locations: [UInt64]
        var values: [Int64]
        var labels: [(key: Int64, value: Int64)]
    }
    private var samples: [SampleEntry] = []
    private var sampleIndex: [SampleKey: Int] = [:]

    /// A builder for samples of `sampleTypes`, one every `period` events of `periodType`.
    public init(
        sampleTypes: [(type: String, unit: String)] = [("samples", "count"), ("cpu", "nanoseconds")],
        periodType: (String, String) = ("cpu", "nanoseconds"),
        period: Int64, timeNanos: Int64, durationNanos: Int64
    ) {
        self.sampleTypes = sampleTypes
        self.periodType = (periodType.0, periodType.1)
        self.period = period
        self.timeNanos = timeNanos
        self.durationNanos = durationNanos
        // The header's strings first, as Go writes them.
        for t in sampleTypes { _ = intern(t.type); _ = intern(t.unit) }
        _ = intern(periodType.0)
        _ = intern(periodType.1)
    }

    /// A CPU profile as Go writes one: sample types `samples/count` and
    /// `cpu/nanoseconds`, period type `cpu/nanoseconds`, period 1e9/Hz.
    /// Add each sample with values `[1, period]` (or `[n, n * period]`).
    public static func cpu(frequencyHz: Int, timeNanos: Int64, durationNanos: Int64) -> PprofBuilder {
        PprofBuilder(
            period: 1_000_000_000 / Int64(max(1, frequencyHz)),
            timeNanos: timeNanos, durationNanos: durationNanos)
    }

    /// Makes `mapping` the profile's first mapping, which pprof takes for the
    /// main binary. Callable before or after samples that use it.
    public func setMainMapping(_ mapping: PprofMappingInfo) {
        mainMapping = internMapping(mapping)
    }

    /// Adds one sample. `stack` is leaf first; each element's frames are
    /// innermost first. `values` has one value per sample type (missing ones
    /// count as 0, extra ones are ignored). Labels become string labels.
    public func addSample(stack: [PprofStackElement], values: [Int64], labels: [String: String] = [:]) {
        assert(values.count == sampleTypes.count, "\(values.count) values for \(sampleTypes.count) sample types")
        sampleCount += 1
        var ids: [UInt64] = []
        ids.reserveCapacity(stack.count)
        for element in stack {
            ids.append(internLocation(element))
        }
        let key = SampleKey(locations: ids, labels: labels)
        if let i = sampleIndex[key] {
            for j in 0..<min(values.count, samples[i].values.count) {
                samples[i].values[j] &+= values[j]
            }
            return
        }
        var v = Array(values.prefix(sampleTypes.count))
        if v.count < sampleTypes.count { v += repeatElement(0, count: sampleTypes.count - v.count) }
        let l = labels.sorted { $0.key < $1.key }.map { (key: intern($0.key), value: intern($0.value)) }
        sampleIndex[key] = samples.count
        samples.append(SampleEntry(locations: ids, values: v, labels: l))
    }

    /// The profile message.
    public func build() -> Perftools_Profiles_Profile {
        // Final mapping ids: the main mapping first, then in order of first use.
        var order = Array(mappings.indices)
        if let m = mainMapping {
            order.remove(at: m)
            order.insert(m, at: 0)
        }
        var mappingID = [UInt64](repeating: 0, count: mappings.count)
        for (position, index) in order.enumerated() { mappingID[index] = UInt64(position + 1) }

        var p = Perftools_Profiles_Profile()
        p.sampleType = sampleTypes.map { valueType($0.type, $0.unit) }
        p.periodType = valueType(periodType.type, periodType.unit)
        p.period = period
        p.timeNanos = timeNanos
        p.durationNanos = durationNanos
        p.sample = samples.map { s in
            var out = Perftools_Profiles_Sample()
            out.locationID = s.locations
            out.value = s.values
            out.label = s.labels.map { l in
                var label = Perftools_Profiles_Label()
                label.key = l.key
                label.str = l.value
                return label
            }
            return out
        }
        p.mapping = order.map { i in
            let e = mappings[i]
            var m = Perftools_Profiles_Mapping()
            m.id = mappingID[i]
            m.memoryStart = e.info.start
            m.memoryLimit = e.info.limit
            m.fileOffset = e.info.offset
            m.filename = e.filename
            m.buildID = e.buildID
            m.hasFunctions_p = e.hasFunctions
            m.hasFilenames_p = e.hasFilenames
            m.hasLineNumbers_p = e.hasLineNumbers
            m.hasInlineFrames_p = e.hasInlineFrames
            return m
        }
        p.location = locations.enumerated().map { i, e in
            var l = Perftools_Profiles_Location()
            l.id = UInt64(i + 1)
            l.mappingID = e.mapping.map { mappingID[$0] } ?? 0
            l.address = e.address
            l.line = e.lines.map { line in
                var out = Perftools_Profiles_Line()
                out.functionID = line.function
                out.line = line.line
                return out
            }
            return l
        }
        p.function = functions
        p.stringTable = strings
        return p
    }

    /// The serialized profile, gzipped: the bytes of a `.pb.gz` file.
    public func gzippedData() throws -> [UInt8] {
        let bytes: [UInt8] = try build().serializedBytes()
        return try Gzip.compress(bytes)
    }

    // MARK: - Interning

    private func intern(_ s: String) -> Int64 {
        if let i = stringIndex[s] { return i }
        let i = Int64(strings.count)
        strings.append(s)
        stringIndex[s] = i
        return i
    }

    private func valueType(_ type: String, _ unit: String) -> Perftools_Profiles_ValueType {
        var v = Perftools_Profiles_ValueType()
        v.type = intern(type)
        v.unit = intern(unit)
        return v
    }

    private func internMapping(_ info: PprofMappingInfo) -> Int {
        if let last = lastMapping, last.info == info { return last.index }
        let i = lookUpMapping(info)
        lastMapping = (info, i)
        return i
    }

    private func lookUpMapping(_ info: PprofMappingInfo) -> Int {
        let key = MappingKey(start: info.start, limit: info.limit, offset: info.offset, file: info.file)
        if let i = mappingIndex[key] {
            if info.hasFunctions { mappings[i].hasFunctions = true }
            if mappings[i].info.buildID.isEmpty, !info.buildID.isEmpty {
                mappings[i].info.buildID = info.buildID
                mappings[i].buildID = intern(info.buildID)
            }
            return i
        }
        let i = mappings.count
        mappings.append(MappingEntry(
            info: info, filename: intern(info.file), buildID: intern(info.buildID),
            hasFunctions: info.hasFunctions))
        mappingIndex[key] = i
        return i
    }

    private func internLocation(_ element: PprofStackElement) -> UInt64 {
        let mapping = element.mapping.map(internMapping)
        let key = LocationKey(address: element.address, mapping: mapping ?? -1)
        if let i = locationIndex[key] { return UInt64(i + 1) }

        var lines: [(function: UInt64, line: Int64)] = []
        lines.reserveCapacity(element.frames.count)
        for f in element.frames {
            lines.append((internFunction(f), Int64(f.line)))
        }
        let names = element.frames.isEmpty
            ? [Self.unknownName(address: element.address, mapping: element.mapping)]
            : element.frames.map(\.function)
        if let m = mapping {
            if element.frames.contains(where: { !$0.file.isEmpty }) { mappings[m].hasFilenames = true }
            if element.frames.contains(where: { $0.line > 0 }) { mappings[m].hasLineNumbers = true }
            if element.frames.count > 1 { mappings[m].hasInlineFrames = true }
        }
        let i = locations.count
        locations.append(LocationEntry(address: element.address, mapping: mapping, lines: lines, names: names))
        locationIndex[key] = i
        return UInt64(i + 1)
    }

    private func internFunction(_ frame: PprofFrame) -> UInt64 {
        let key = FunctionKey(name: frame.function, file: frame.file, startLine: frame.startLine)
        if let i = functionIndex[key] { return UInt64(i + 1) }
        let i = functions.count
        var f = Perftools_Profiles_Function()
        f.id = UInt64(i + 1)
        f.name = intern(frame.function)
        f.systemName = f.name
        f.filename = intern(frame.file)
        f.startLine = Int64(frame.startLine)
        functions.append(f)
        functionIndex[key] = i
        return f.id
    }

    /// How an address without frames reads in the text views: `0x<address>`, or
    /// `<file name>+0x<file offset>` when its mapping is known.
    static func unknownName(address: UInt64, mapping: PprofMappingInfo?) -> String {
        guard let m = mapping, !m.file.isEmpty, address >= m.start else {
            return "0x" + String(address, radix: 16)
        }
        let base = m.file.split(separator: "/").last.map(String.init) ?? m.file
        return base + "+0x" + String(address - m.start + m.offset, radix: 16)
    }
}

// MARK: - Text views

extension PprofBuilder {
    /// Collapsed stacks (flame graph input): one line per distinct stack,
    /// `root;caller;leaf value`, with the first sample value, inlined frames as
    /// entries of their own (outermost first), sorted by stack. Frames without
    /// symbols read `0x<address>` or `<file name>+0x<file offset>`; `;` in a
    /// name becomes `:`. Samples with an empty stack are left out.
    public func collapsed() -> String {
        var totals: [String: Int64] = [:]
        for s in samples where !s.locations.isEmpty {
            var names: [String] = []
            for id in s.locations.reversed() {
                for n in locations[Int(id) - 1].names.reversed() {
                    names.append(n.contains(";") ? n.split(separator: ";", omittingEmptySubsequences: false).joined(separator: ":") : n)
                }
            }
            totals[names.joined(separator: ";"), default: 0] += s.values.first ?? 0
        }
        var out = ""
        for k in totals.keys.sorted() {
            out += k + " " + String(totals[k]!) + "\n"
        }
        return out
    }

    /// The functions with the largest shares of the first sample value, as
    /// fractions of the total (0...1), largest first (ties by name): `flat` by
    /// the leaf frame (the innermost frame of the leaf location), `cumulative`
    /// counting each function once per sample wherever it is on the stack.
    public func topFunctions(limit: Int) -> (flat: [(name: String, share: Double)], cumulative: [(name: String, share: Double)]) {
        var total: Int64 = 0
        var flat: [String: Int64] = [:]
        var cumulative: [String: Int64] = [:]
        var seen = Set<String>()
        for s in samples {
            let v = s.values.first ?? 0
            total += v
            guard let leaf = s.locations.first else { continue }
            flat[locations[Int(leaf) - 1].names[0], default: 0] += v
            seen.removeAll(keepingCapacity: true)
            for id in s.locations {
                for n in locations[Int(id) - 1].names where seen.insert(n).inserted {
                    cumulative[n, default: 0] += v
                }
            }
        }
        func ranked(_ d: [String: Int64]) -> [(name: String, share: Double)] {
            d.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
                .prefix(max(0, limit))
                .map { (name: $0.key, share: total == 0 ? 0 : Double($0.value) / Double(total)) }
        }
        return (ranked(flat), ranked(cumulative))
    }
}
