import Foundation
import GoBinaryFormat
import GoIntrospection
import GoTestSupport
import Pprof
import XCTest

/// Issue #20, work in progress: the heap profile read from outside against the
/// program's own (runtime/pprof, debug=0), taken back to back with no GC in
/// between. The heapsites fixture retains 48 MiB at retainA and 16 MiB at
/// retainB and churned 256 MiB at churnC; per site, inuse_space and alloc_space
/// must agree within 1 %. Unstripped builds only so far (the stripped ones need
/// mbuckets and MemProfileRate in the code-reference table).
final class HeapProfileReaderTests: XCTestCase {
    static let source = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/heapsites").path
    static let sites = ["main.retainA", "main.retainB", "main.churnC"]

    /// runtime/pprof's scaleHeapSample.
    static func scale(_ count: UInt64, _ size: UInt64, rate: Int64) -> (Double, Double) {
        guard count > 0, size > 0 else { return (0, 0) }
        guard rate > 1 else { return (Double(count), Double(size)) }
        let avg = Double(size) / Double(count)
        let s = 1 / (1 - exp(-avg / Double(rate)))
        return (Double(count) * s, Double(size) * s)
    }

    func testInuseAndAllocSpacePerSiteEqualTheProgramsOwnProfile() throws {
        var failures: [String] = []
        for b in try GoToolchains.buildAll(source: Self.source, flavours: [.plain, .staticBuild]) {
            let tag = "\(b.version) \(b.flavour.rawValue)"
            do { print("HeapProfileReaderTests \(tag): " + (try check(b.path))) } catch { failures.append("\(tag): \(error)") }
        }
        XCTAssert(failures.isEmpty, failures.joined(separator: "\n"))
    }

    func check(_ binary: String) throws -> String {
        let p = Process()
        let input = Pipe(), output = Pipe()
        p.executableURL = URL(fileURLWithPath: binary)
        p.standardInput = input
        p.standardOutput = output
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        let fd = output.fileHandleForReading.fileDescriptor
        guard TestContainer.readLine(fd, timeout: 60).hasPrefix("ready") else { throw GoToolchains.Failure(description: "no ready line") }
        let dir = NSTemporaryDirectory() + "heapsites-\(p.processIdentifier)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        input.fileHandleForWriting.write(Data("dump \(dir)\n".utf8))
        guard TestContainer.readLine(fd, timeout: 60) == "dumped" else { throw GoToolchains.Failure(description: "no dump") }

        let reader = try HeapProfileReader(pid: p.processIdentifier, binary: try GoBinary(path: binary))
        let (rate, records) = try reader.read()
        // Ours, per site: the first frame that is one of the sites.
        var ours: [String: (inuse: Double, alloc: Double)] = [:]
        for r in records {
            let names = r.stack.flatMap { pc in reader.pcln.frames(at: pc &- reader.loadBias &- 1).map(\.function) }
            guard let site = names.first(where: { Self.sites.contains($0) }) else { continue }
            let inuse = Self.scale(r.inuseObjects, r.inuseBytes, rate: rate).1, alloc = Self.scale(r.allocObjects, r.allocBytes, rate: rate).1
            ours[site, default: (0, 0)].inuse += inuse
            ours[site, default: (0, 0)].alloc += alloc
        }
        // Theirs: alloc_space (index 1) and inuse_space (index 3) per site.
        let prof = try PprofFile.decode(Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/heap.pb.gz"))))
        func str(_ i: Int64) -> String { prof.stringTable[Int(i)] }
        var fn: [UInt64: String] = [:]
        for f in prof.function { fn[f.id] = str(f.name) }
        var locs: [UInt64: [String]] = [:]
        for l in prof.location { locs[l.id] = l.line.map { fn[$0.functionID] ?? "?" } }
        var theirs: [String: (inuse: Double, alloc: Double)] = [:]
        for s in prof.sample {
            let names = s.locationID.flatMap { locs[$0] ?? [] }
            guard let site = names.first(where: { Self.sites.contains($0) }) else { continue }
            theirs[site, default: (0, 0)].alloc += Double(s.value[1])
            theirs[site, default: (0, 0)].inuse += Double(s.value[3])
        }
        var problems: [String] = []
        for site in Self.sites {
            let o = ours[site] ?? (0, 0), t = theirs[site] ?? (0, 0)
            for (what, a, b) in [("inuse_space", o.inuse, t.inuse), ("alloc_space", o.alloc, t.alloc)] where abs(a - b) > max(1, 0.01 * b) {
                problems.append("\(site) \(what): ours \(Int(a)), Go's \(Int(b))")
            }
        }
        guard problems.isEmpty else { throw GoToolchains.Failure(description: problems.joined(separator: "; ")) }
        let mib = { (v: Double) in String(format: "%.1f", v / 1048576) }
        return "rate \(rate), \(records.count) buckets; inuse MiB A \(mib(ours["main.retainA"]?.inuse ?? 0)) B \(mib(ours["main.retainB"]?.inuse ?? 0)), "
            + "alloc MiB C \(mib(ours["main.churnC"]?.alloc ?? 0)) (Go's: \(mib(theirs["main.retainA"]?.inuse ?? 0)), \(mib(theirs["main.retainB"]?.inuse ?? 0)), \(mib(theirs["main.churnC"]?.alloc ?? 0)))"
    }
}
