import Foundation
import Glibc
import XCTest

@testable import GoIntrospection

/// Reads live child processes (a C fixture built here with /usr/bin/cc, and a Go program
/// built with /usr/bin/go) through ProcessMemory / ProcessMaps / ProcessTasks, and checks
/// every value against what the child printed and what `nm` says about its binary.
final class ProcessMemoryTests: XCTestCase {

    // MARK: - Reading memory

    func testReadBatchOfScatteredWordsMatchesPattern() throws {
        let child = try Child.start(Self.fixtures().pie)
        defer { child.stop() }
        let base = try child.address("pattern")
        let memory = ProcessMemory(pid: child.pid)

        // 64 scattered word indices over the 32 KiB array (several pages), deterministic.
        var rng = SplitMix64(seed: 0xFE44E7)
        let indices = (0..<64).map { _ in Int(rng.next() % 4096) }
        let requests = indices.map { (address: base + UInt64($0) * 8, count: 8) }

        let before = ProcessMemory.syscallCount
        let chunks = try memory.readBatch(requests)
        XCTAssertEqual(ProcessMemory.syscallCount - before, 1, "64 requests must be one process_vm_readv")
        XCTAssertEqual(chunks.count, 64)
        for (i, chunk) in zip(indices, chunks) {
            XCTAssertEqual(chunk.count, 8)
            XCTAssertEqual(chunk.u64(at: 0), Self.pattern(i), "word \(i)")
        }

        let before2 = ProcessMemory.syscallCount
        let words = try memory.readWords(requests.map(\.address))
        XCTAssertEqual(ProcessMemory.syscallCount - before2, 1, "readWords of 64 addresses must be one process_vm_readv")
        XCTAssertEqual(words, indices.map(Self.pattern))

        // Single reads: a typed integer, an unaligned one, and the whole array at once.
        XCTAssertEqual(try memory.read(UInt64.self, at: base + 8 * 100), Self.pattern(100))
        let two = try memory.read(base, count: 16)
        let unaligned = try memory.read(UInt32.self, at: base + 5)
        XCTAssertEqual(unaligned, two.u32(at: 5))
        let all = try memory.read(base, count: 4096 * 8)
        for i in 0..<4096 where all.u64(at: i * 8) != Self.pattern(i) {
            XCTFail("word \(i) of the full read is \(String(all.u64(at: i * 8) ?? 0, radix: 16))")
            break
        }
        // Garbage lengths (as read from a target's len fields) are refused, not trapped on.
        XCTAssertThrowsError(try memory.read(base, count: -1)) { e in
            XCTAssertEqual(e as? ProcessReadError, .other(pid: child.pid, errno: EINVAL))
        }
        XCTAssertThrowsError(try memory.read(base, count: Int.max))
        XCTAssertThrowsError(try memory.readBatch([(base, 8), (base, -8)]))
        XCTAssertThrowsError(try memory.readBatch([(base, Int.max), (base, Int.max)]))
        XCTAssertEqual(try memory.read(base, count: 0), [])
        XCTAssertEqual(try memory.readBatch([]).count, 0)
        XCTAssertEqual(try memory.readWords([]), [])
    }

    func testUnmappedAddressFaultsNamingTheAddress() throws {
        let child = try Child.start(Self.fixtures().pie)
        defer { child.stop() }
        let region = try child.address("region")
        let page = UInt64(try child.value("page"))
        let hole = region + page
        let memory = ProcessMemory(pid: child.pid)

        // The pages either side of the hole are readable and hold the child's bytes.
        let below = try memory.read(region, count: Int(page))
        XCTAssertEqual(below[0], 3)
        XCTAssertEqual(below[1], 10)
        let above = try memory.read(region + 2 * page, count: 4)
        XCTAssertEqual(above[0], UInt8(truncatingIfNeeded: Int(2 * page) * 7 + 3))

        XCTAssertThrowsError(try memory.read(hole, count: 8)) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: hole))
        }
        XCTAssertThrowsError(try memory.read(UInt64.self, at: hole + 16)) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: hole + 16))
        }
        // A read that starts mapped and runs into the hole (the kernel copies the first part).
        XCTAssertThrowsError(try memory.read(hole - 100, count: 200)) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: hole - 100))
        }
        XCTAssertThrowsError(try memory.read(0, count: 8)) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: 0))
        }

        // Batches name the first request that failed, not the first request or the last.
        let batch: [(address: UInt64, count: Int)] = [
            (region, 8), (region + 2 * page, 8), (region + 16, 0), (hole + 8, 8), (region + 8, 8), (hole + 64, 8),
        ]
        XCTAssertThrowsError(try memory.readBatch(batch)) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: hole + 8))
        }
        // The first request failing: the kernel returns EFAULT rather than a short count.
        XCTAssertThrowsError(try memory.readBatch([(hole, 8), (region, 8)])) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: hole))
        }
        // A request straddling into the hole after a good one.
        XCTAssertThrowsError(try memory.readBatch([(region, 8), (hole - 4, 8), (region, 8)])) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: hole - 4))
        }
        XCTAssertThrowsError(try memory.readWords([region, region + 8, hole + 24, region + 16])) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: hole + 24))
        }
        // In a second chunk of a large batch.
        var large = [UInt64](repeating: region, count: 1500)
        large[1300] = hole + 1300
        XCTAssertThrowsError(try memory.readWords(large)) { e in
            XCTAssertEqual(e as? ProcessReadError, .fault(pid: child.pid, address: hole + 1300))
        }
    }

    func testReadAfterExitAndReapIsExited() throws {
        let child = try Child.start(Self.fixtures().pie)
        let pid = child.pid
        let base = try child.address("pattern")
        XCTAssertEqual(try ProcessMemory(pid: pid).read(UInt64.self, at: base), Self.pattern(0))
        child.stop() // SIGKILL + waitpid
        XCTAssertThrowsError(try ProcessMemory(pid: pid).read(base, count: 8)) { e in
            XCTAssertEqual(e as? ProcessReadError, .exited(pid: pid))
        }
        XCTAssertThrowsError(try ProcessMemory(pid: pid).readWords([base, base + 8])) { e in
            XCTAssertEqual(e as? ProcessReadError, .exited(pid: pid))
        }
        XCTAssertThrowsError(try ProcessMaps.read(pid: pid)) { e in
            XCTAssertEqual(e as? ProcessReadError, .exited(pid: pid))
        }
        XCTAssertThrowsError(try ProcessTasks.threadIDs(pid: pid)) { e in
            XCTAssertEqual(e as? ProcessReadError, .exited(pid: pid))
        }
        XCTAssertThrowsError(try ProcessTasks.threadCount(pid: pid)) { e in
            XCTAssertEqual(e as? ProcessReadError, .exited(pid: pid))
        }
    }

    func testBatchLargerThanIOVMax() throws {
        let child = try Child.start(Self.fixtures().pie)
        defer { child.stop() }
        let base = try child.address("pattern")
        let memory = ProcessMemory(pid: child.pid)

        // 3000 requests of 0...16 bytes at varying (unaligned) offsets: 3 syscalls.
        var rng = SplitMix64(seed: 42)
        let requests: [(address: UInt64, count: Int)] = (0..<3000).map { _ in
            (base + rng.next() % (4096 * 8 - 16), Int(rng.next() % 17))
        }
        let full = try memory.read(base, count: 4096 * 8)
        let before = ProcessMemory.syscallCount
        let chunks = try memory.readBatch(requests)
        XCTAssertEqual(ProcessMemory.syscallCount - before, 3)
        XCTAssertEqual(chunks.count, 3000)
        for (r, chunk) in zip(requests, chunks) {
            let o = Int(r.address - base)
            XCTAssertEqual(chunk, Array(full[o..<(o + r.count)]))
        }
        let packed = try memory.readBatchContiguous(requests)
        XCTAssertEqual(packed, chunks.flatMap { $0 })

        let addresses = (0..<2048).map { base + UInt64($0 % 4096) * 8 }
        let before2 = ProcessMemory.syscallCount
        let words = try memory.readWords(addresses)
        XCTAssertEqual(ProcessMemory.syscallCount - before2, 2)
        XCTAssertEqual(words, (0..<2048).map { Self.pattern($0 % 4096) })
    }

    // MARK: - Maps

    func testMapsOfLiveChild() throws {
        let fx = try Self.fixtures()
        let child = try Child.start(fx.pie)
        defer { child.stop() }
        let maps = try ProcessMaps.read(pid: child.pid)
        XCTAssertGreaterThan(maps.count, 5)
        XCTAssertEqual(maps.map(\.start), maps.map(\.start).sorted())
        for m in maps { XCTAssertLessThan(m.start, m.end) }

        let exe = maps.filter { $0.path == fx.pie }
        XCTAssertTrue(exe.contains { $0.executable && $0.readable && !$0.writable && $0.isPrivate }, "\(exe)")
        XCTAssertTrue(exe.allSatisfy { $0.inode != 0 && !$0.deleted })
        XCTAssertTrue(maps.contains { $0.path == "[stack]" && $0.writable })
        XCTAssertTrue(maps.contains { $0.path == "[vdso]" && $0.executable })
        XCTAssertTrue(maps.contains { $0.path.hasSuffix("libc.so.6") })

        var st = stat()
        XCTAssertEqual(stat(fx.pie, &st), 0)
        XCTAssertTrue(exe.allSatisfy { $0.inode == UInt64(st.st_ino) })
        let id = try ProcessMaps.ExecutableIdentity.of(pid: child.pid)
        XCTAssertEqual(id.path, fx.pie)
        XCTAssertEqual(id.inode, UInt64(st.st_ino))
        XCTAssertEqual(ProcessMaps.mappings(of: id, in: maps), exe)

        let pattern = try child.address("pattern")
        let m = try XCTUnwrap(maps.mapping(containing: pattern))
        XCTAssertTrue(m.readable && m.writable && !m.executable)
        XCTAssertEqual(maps.mapping(containing: try child.address("marker"))?.path, fx.pie)
        let region = try child.address("region")
        let page = UInt64(try child.value("page"))
        XCTAssertNotNil(maps.mapping(containing: region))
        XCTAssertNil(maps.mapping(containing: region + page), "the hole")
        XCTAssertNotNil(maps.mapping(containing: region + 2 * page))
        XCTAssertNil(maps.mapping(containing: 0))
        XCTAssertNil(maps.mapping(containing: UInt64.max))
        for m in maps {
            XCTAssertEqual(maps.mapping(containing: m.start), m)
            XCTAssertEqual(maps.mapping(containing: m.end - 1), m)
        }
    }

    func testParseTrickyMapsText() {
        let text = """
            00400000-00401000 r--p 00000000 fd:01 1234                               /usr/bin/my tool
            00401000-00452000 r-xp 00001000 fd:01 1234                               /usr/bin/my tool
            7f0000000000-7f0000021000 rw-p 00000000 00:00 0 \n\
            7f0000021000-7f0000022000 ---p 00000000 00:00 0
            7f1000000000-7f1000004000 r-xs 00002000 103:0a 99887766                  /tmp/gone  twice (deleted)
            7f2000000000-7f2000001000 rw-p 00000000 00:01 4242                       /memfd:jit (deleted)
            7f3000000000-7f3000001000 rw-p 00000000 00:00 0                          [anon:go heap]
            55d5d6a5c000-55d5d6a7d000 rw-p 00000000 00:00 0                          [heap]
            7ffd8b1c0000-7ffd8b1e1000 rw-p 00000000 00:00 0                          [stack]
            7ffd8b1f6000-7ffd8b1f8000 r-xp 00000000 00:00 0                          [vdso]
            ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
            garbage line
            7f4000000000-7f4000001000 rw-p
            """
        let maps = ProcessMaps.parse(text)
        XCTAssertEqual(maps.count, 11)
        guard maps.count == 11 else { return }

        XCTAssertEqual(maps[0], MemoryMapping(start: 0x400000, end: 0x401000, readable: true, writable: false,
                                              executable: false, isPrivate: true, offset: 0, device: "fd:01",
                                              inode: 1234, path: "/usr/bin/my tool"))
        XCTAssertEqual(maps[1].offset, 0x1000)
        XCTAssertTrue(maps[1].executable)
        XCTAssertEqual(maps[1].path, "/usr/bin/my tool")
        XCTAssertEqual(maps[2].path, "", "anonymous, trailing blank")
        XCTAssertEqual(maps[2].inode, 0)
        XCTAssertFalse(maps[2].isFile)
        XCTAssertEqual(maps[3].path, "")
        XCTAssertFalse(maps[3].readable || maps[3].writable || maps[3].executable)

        XCTAssertEqual(maps[4].path, "/tmp/gone  twice")
        XCTAssertTrue(maps[4].deleted)
        XCTAssertFalse(maps[4].isPrivate)
        XCTAssertEqual(maps[4].offset, 0x2000)
        XCTAssertEqual(maps[4].inode, 99_887_766)
        XCTAssertEqual(maps[4].device, "103:0a")
        XCTAssertEqual(maps[4].deviceNumbers?.major, 0x103)
        XCTAssertEqual(maps[4].deviceNumbers?.minor, 0x0a)
        XCTAssertEqual(maps[5].path, "/memfd:jit")
        XCTAssertTrue(maps[5].deleted)
        XCTAssertFalse(maps[0].deleted)
        XCTAssertEqual(maps[6].path, "[anon:go heap]")
        XCTAssertEqual(maps[7].path, "[heap]")
        XCTAssertEqual(maps[8].path, "[stack]")
        XCTAssertEqual(maps[9].path, "[vdso]")
        XCTAssertEqual(maps[10].start, 0xffff_ffff_ff60_0000)
        XCTAssertEqual(maps[10].path, "[vsyscall]")

        XCTAssertEqual(maps.mapping(containing: 0x400fff)?.start, 0x400000)
        XCTAssertEqual(maps.mapping(containing: 0x401000)?.start, 0x401000)
        XCTAssertNil(maps.mapping(containing: 0x452000))
        XCTAssertEqual(maps.mapping(containing: 0x7ffd8b1e0fff)?.path, "[stack]")
    }

    func testExecutableMappingsMatchByIdentityThenPath() {
        let maps = ProcessMaps.parse("""
            00400000-00401000 r--p 00000000 00:2f 77 /app/server
            00401000-00402000 r-xp 00001000 00:2f 77 /app/server
            7f0000000000-7f0000001000 r--p 00000000 fd:01 77 /lib/other
            7f1000000000-7f1000001000 r--p 00000000 fd:01 78 /app/server
            """)
        // Device and inode agree: exactly the two mappings, whatever the path says.
        let byID = ProcessMaps.mappings(
            of: .init(deviceMajor: 0, deviceMinor: 0x2f, inode: 77, path: "/elsewhere/server"), in: maps)
        XCTAssertEqual(byID.map(\.start), [0x400000, 0x401000])
        // Overlayfs: stat's device is the overlay's, maps shows the underlying one; inode + path decide.
        let overlay = ProcessMaps.mappings(
            of: .init(deviceMajor: 0, deviceMinor: 0x99, inode: 77, path: "/app/server"), in: maps)
        XCTAssertEqual(overlay.map(\.start), [0x400000, 0x401000])
        // Nothing but the path agrees.
        let byPath = ProcessMaps.mappings(
            of: .init(deviceMajor: 0, deviceMinor: 0x99, inode: 5, path: "/app/server"), in: maps)
        XCTAssertEqual(byPath.map(\.start), [0x400000, 0x401000, 0x7f1000000000])
        XCTAssertEqual(ProcessMaps.mappings(of: .init(deviceMajor: 1, deviceMinor: 1, inode: 5, path: ""), in: maps), [])
    }

    func testLoadBiasArithmetic() throws {
        func seg(_ offset: UInt64, _ vaddr: UInt64, _ size: UInt64) -> ELFFile.Segment {
            .init(type: 1 /* PT_LOAD */, flags: 4, offset: offset, vaddr: vaddr, fileSize: size, memSize: size)
        }
        func mapping(_ start: UInt64, _ offset: UInt64) -> MemoryMapping {
            .init(start: start, end: start + 0x1000, readable: true, writable: false, executable: false,
                  isPrivate: true, offset: offset, device: "fd:01", inode: 1, path: "/x")
        }
        // Go's internal linker: ET_DYN whose first PT_LOAD is at vaddr 0x400000, offset 0.
        let go = [seg(0, 0x400000, 0x82ad0), seg(0x83000, 0x483000, 0x3cad7)]
        XCTAssertEqual(try ProcessMaps.loadBias(
            executableMappings: [mapping(0x5555_5540_0000 + 0x83000, 0x83000), mapping(0x5555_5540_0000, 0)],
            elfType: 3, segments: go, path: "go"), 0x5555_5500_0000)
        // First PT_LOAD not at file offset 0 and not page aligned in the file.
        let odd = [seg(0x240, 0x10240, 0x500), seg(0x1000, 0x11000, 0x100)]
        XCTAssertEqual(try ProcessMaps.loadBias(
            executableMappings: [mapping(0x7000_0001_0000, 0), mapping(0x7000_0001_1000, 0x1000)],
            elfType: 3, segments: odd, path: "odd"), 0x7000_0000_0000)
        // Two PT_LOADs sharing the first file page (no -z separate-code): the lower mapping wins.
        let shared = [seg(0, 0, 0x5f8), seg(0x5f8, 0x15f8, 0x200)]
        XCTAssertEqual(try ProcessMaps.loadBias(
            executableMappings: [mapping(0x7000_0000_1000, 0), mapping(0x7000_0000_0000, 0)],
            elfType: 3, segments: shared, path: "shared"), 0x7000_0000_0000)
        XCTAssertEqual(try ProcessMaps.loadBias(executableMappings: [], elfType: 2, segments: go, path: "exec"), 0)
        XCTAssertThrowsError(try ProcessMaps.loadBias(executableMappings: [], elfType: 3, segments: go, path: "none"))
    }

    // MARK: - Load bias of real processes

    func testLoadBiasOfPIECProgram() throws {
        let fx = try Self.fixtures()
        let child = try Child.start(fx.pie)
        defer { child.stop() }
        let elf = try ELFFile(path: fx.pie)
        XCTAssertEqual(elf.type, 3, "ET_DYN")
        try checkBias(child: child, elf: elf, symbols: fx.pieSymbols, expectNonZero: true)
    }

    func testLoadBiasOfNonPIECProgram() throws {
        let fx = try Self.fixtures()
        let child = try Child.start(fx.nonPIE)
        defer { child.stop() }
        let elf = try ELFFile(path: fx.nonPIE)
        XCTAssertEqual(elf.type, 2, "ET_EXEC")
        try checkBias(child: child, elf: elf, symbols: fx.nonPIESymbols, expectNonZero: false)
    }

    func testLoadBiasOfDeletedBinary() throws {
        let fx = try Self.fixtures()
        let copy = fx.dir + "/memtarget-deleted"
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: fx.pie, toPath: copy)
        let child = try Child.start(copy)
        defer { child.stop() }
        let elf = try ELFFile(path: copy) // opened before the unlink, as the agent would via /proc/PID/exe
        try FileManager.default.removeItem(atPath: copy)

        let maps = try ProcessMaps.read(pid: child.pid)
        let exe = maps.filter { $0.path == copy }
        XCTAssertFalse(exe.isEmpty)
        XCTAssertTrue(exe.allSatisfy(\.deleted))
        let id = try ProcessMaps.ExecutableIdentity.of(pid: child.pid)
        XCTAssertEqual(id.path, copy)
        XCTAssertEqual(ProcessMaps.mappings(of: id, in: maps), exe)
        try checkBias(child: child, elf: elf, symbols: fx.pieSymbols, expectNonZero: true)
    }

    func testLoadBiasOfGoPIEAndNonPIE() throws {
        let go = try Self.goFixtures()
        for (binary, type) in [(go.pie, UInt16(3)), (go.nonPIE, UInt16(2))] {
            let child = try Child.start(binary)
            defer { child.stop() }
            let elf = try ELFFile(path: binary)
            XCTAssertEqual(elf.type, type, binary)
            let symbols = try Self.nm(binary)
            let symbol = try XCTUnwrap(symbols["main.marker"])
            let runtime = try child.address("marker")
            let bias = try ProcessMaps.loadBias(pid: child.pid, elf: elf)
            XCTAssertEqual(bias &+ symbol, runtime, "\(binary): bias 0x\(String(bias, radix: 16))")
            if type == 3 { XCTAssertNotEqual(bias, 0) } else { XCTAssertEqual(bias, 0) }
            XCTAssertEqual(try ProcessMemory(pid: child.pid).readWords([bias + symbol, bias + symbol + 24]),
                           [0x6665_7272_6574_2d67, 0x42])
            // A string in .rodata through the bias: Go's build info magic.
            if let buildInfo = elf.section(named: ".go.buildinfo") {
                let magic = try ProcessMemory(pid: child.pid).read(bias + buildInfo.address, count: 14)
                XCTAssertEqual(magic, [0xff] + Array(" Go buildinf:".utf8))
            } else {
                XCTFail("\(binary): no .go.buildinfo")
            }
        }
    }

    private func checkBias(child: Child, elf: ELFFile, symbols: [String: UInt64], expectNonZero: Bool,
                           file: StaticString = #filePath, line: UInt = #line) throws {
        let pattern = try XCTUnwrap(symbols["memtarget_pattern"], file: file, line: line)
        let marker = try XCTUnwrap(symbols["memtarget_marker"], file: file, line: line)
        let initialized = try XCTUnwrap(symbols["memtarget_initialized"], file: file, line: line)
        let expected = try child.address("pattern") &- pattern // the oracle: runtime address - nm value

        let bias = try ProcessMaps.loadBias(pid: child.pid, elf: elf)
        XCTAssertEqual(bias, expected, "bias 0x\(String(bias, radix: 16)) != 0x\(String(expected, radix: 16))",
                       file: file, line: line)
        XCTAssertEqual(bias == 0, !expectNonZero, file: file, line: line)
        XCTAssertEqual(bias &+ marker, try child.address("marker"), file: file, line: line)
        XCTAssertEqual(bias &+ initialized, try child.address("initialized"), file: file, line: line)

        let memory = ProcessMemory(pid: child.pid)
        let text = try memory.read(bias + marker, count: 27)
        XCTAssertEqual(text.cString(at: 0), "ferret-memtarget-marker-v1", file: file, line: line)
        XCTAssertEqual(try memory.read(UInt64.self, at: bias + initialized), 0x1122_3344_5566_7788, file: file, line: line)
        XCTAssertEqual(try memory.readWords([bias + pattern, bias + pattern + 8 * 4095]),
                       [Self.pattern(0), Self.pattern(4095)], file: file, line: line)
    }

    // MARK: - Threads

    func testThreadsOfLiveChild() throws {
        let child = try Child.start(Self.fixtures().pie, arguments: ["5"])
        defer { child.stop() }
        XCTAssertEqual(try child.value("threads"), 6)
        let tids = try ProcessTasks.threadIDs(pid: child.pid)
        XCTAssertEqual(tids.count, 6)
        XCTAssertTrue(tids.contains(child.pid))
        XCTAssertEqual(tids, tids.sorted())
        XCTAssertEqual(Set(tids).count, 6)
        XCTAssertEqual(try ProcessTasks.threadCount(pid: child.pid), 6)

        let single = try Child.start(Self.fixtures().nonPIE, arguments: ["0"])
        defer { single.stop() }
        XCTAssertEqual(try ProcessTasks.threadIDs(pid: single.pid), [single.pid])
        XCTAssertEqual(try ProcessTasks.threadCount(pid: single.pid), 1)
    }

    func testThreadsFromFixtureProcRoot() throws {
        let root = NSTemporaryDirectory() + "ferret-procroot-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        for tid in ["4242", "4250", "4243"] {
            try FileManager.default.createDirectory(atPath: "\(root)/4242/task/\(tid)", withIntermediateDirectories: true)
        }
        try FileManager.default.createDirectory(atPath: "\(root)/4242/task/notatid", withIntermediateDirectories: true)
        try "Name:\tserver\nUmask:\t0022\nState:\tS (sleeping)\nThreads:\t17\nSigQ:\t0/1\n"
            .write(toFile: "\(root)/4242/status", atomically: true, encoding: .utf8)
        try "00400000-00401000 r-xp 00000000 fd:01 12 /srv/a b\n"
            .write(toFile: "\(root)/4242/maps", atomically: true, encoding: .utf8)

        XCTAssertEqual(try ProcessTasks.threadIDs(pid: 4242, procRoot: root), [4242, 4243, 4250])
        XCTAssertEqual(try ProcessTasks.threadCount(pid: 4242, procRoot: root), 17)
        XCTAssertEqual(try ProcessMaps.read(pid: 4242, procRoot: root).map(\.path), ["/srv/a b"])
        XCTAssertThrowsError(try ProcessTasks.threadIDs(pid: 4243, procRoot: root)) { e in
            XCTAssertEqual(e as? ProcessReadError, .exited(pid: 4243))
        }
        XCTAssertNil(ProcessTasks.parseThreadCount("Name:\tx\n"))
        XCTAssertEqual(ProcessTasks.parseThreadCount("Threads: 3"), 3)
    }

    // MARK: - Little-endian decoding

    func testLittleEndianBytes() throws {
        let b: [UInt8] = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0xff, 0xfe]
        XCTAssertEqual(b.u8(at: 0), 0x01)
        XCTAssertEqual(b.u16(at: 0), 0x0201)
        XCTAssertEqual(b.u32(at: 1), 0x0504_0302)
        XCTAssertEqual(b.u64(at: 0), 0x0807_0605_0403_0201)
        XCTAssertEqual(b.u64(at: 2), 0xfeff_0807_0605_0403)
        XCTAssertEqual(b.i16(at: 8), -257)
        XCTAssertEqual(b.i8(at: 9), -2)
        XCTAssertEqual(b.i64(at: 2), Int64(bitPattern: 0xfeff_0807_0605_0403))
        XCTAssertEqual(b.i32(at: 6), Int32(bitPattern: 0xfeff_0807))
        XCTAssertNil(b.u64(at: 3), "runs past the end")
        XCTAssertNil(b.u16(at: 9))
        XCTAssertNil(b.u8(at: 10))
        XCTAssertNil(b.u8(at: -1))
        XCTAssertNil(b.u64(at: Int.max))
        XCTAssertNil(b.u32(at: Int.min))
        XCTAssertNil([UInt8]().u8(at: 0))
        XCTAssertEqual(b.uintptr(at: 0, size: 4), 0x0403_0201)
        XCTAssertEqual(b.uintptr(at: 0, size: 8), 0x0807_0605_0403_0201)
        XCTAssertNil(b.uintptr(at: 0, size: 2))

        // Slices: offsets count from the slice's first byte, not the base array's indices.
        let s = b[4...]
        XCTAssertEqual(s.startIndex, 4)
        XCTAssertEqual(s.u32(at: 0), 0x0807_0605)
        XCTAssertEqual(s.u16(at: 4), 0xfeff)
        XCTAssertNil(s.u64(at: 0))

        // Go varints: 300 = ac 02; the largest 10-byte one; truncated and overlong ones.
        XCTAssertEqual([0xac, 0x02].uvarint(at: 0)?.value, 300)
        XCTAssertEqual([0x00, 0xac, 0x02].uvarint(at: 1)?.length, 2)
        let maxVarint: [UInt8] = Array(repeating: 0xff, count: 9) + [0x01]
        XCTAssertEqual(maxVarint.uvarint(at: 0)?.value, UInt64.max)
        XCTAssertNil([0x80, 0x80].uvarint(at: 0))
        XCTAssertNil(([UInt8](repeating: 0x80, count: 11) + [0]).uvarint(at: 0))

        XCTAssertEqual(Array("abc\0def\0".utf8).cString(at: 4), "def")
        XCTAssertNil(Array("abc".utf8).cString(at: 0))

        var r = ByteReader(b)
        XCTAssertEqual(try r.u16(), 0x0201)
        try r.skip(2)
        XCTAssertEqual(try r.u32(), 0x0807_0605)
        XCTAssertThrowsError(try r.u32())
        XCTAssertEqual(r.offset, 8, "a failed read does not move the cursor")
        XCTAssertEqual(try r.u16(), 0xfeff)
        XCTAssertThrowsError(try r.u8())
        XCTAssertThrowsError(try r.skip(1))
        try r.skip(0)

        b.withUnsafeBytes { raw in XCTAssertEqual(raw.u32(at: 6), 0xfeff_0807) }
    }

    // MARK: - Fixtures

    override class func tearDown() {
        for name in ["ferret-memtarget", "ferret-gotarget"] {
            try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "\(name)-\(getpid())")
        }
        super.tearDown()
    }

    /// Word `i` of the C fixture's pattern array.
    static func pattern(_ i: Int) -> UInt64 { UInt64(i + 1) &* 0x9E37_79B9_7F4A_7C15 }

    struct Fixtures: Sendable {
        var dir: String
        var pie: String
        var nonPIE: String
        var pieSymbols: [String: UInt64]
        var nonPIESymbols: [String: UInt64]
    }

    struct GoFixtures: Sendable {
        var pie: String
        var nonPIE: String
    }

    struct FixtureError: Error, CustomStringConvertible {
        var description: String
    }

    private static let builtFixtures: Result<Fixtures, FixtureError> = {
        let dir = NSTemporaryDirectory() + "ferret-memtarget-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/memtarget.c").path
        let pie = dir + "/memtarget-pie", nonPIE = dir + "/memtarget-nopie"
        for (out, flags) in [(pie, ["-fPIE", "-pie"]), (nonPIE, ["-fno-pie", "-no-pie"])] {
            let r = run("/usr/bin/cc", ["-O1", "-pthread"] + flags + ["-o", out, source])
            guard r.status == 0 else { return .failure(FixtureError(description: "cc failed: \(r.output)")) }
        }
        do {
            return .success(Fixtures(dir: dir, pie: pie, nonPIE: nonPIE, pieSymbols: try nm(pie),
                                     nonPIESymbols: try nm(nonPIE)))
        } catch {
            return .failure(error as? FixtureError ?? FixtureError(description: "\(error)"))
        }
    }()

    static func fixtures() throws -> Fixtures { try builtFixtures.get() }

    private static let builtGoFixtures: Result<GoFixtures, FixtureError> = {
        let dir = NSTemporaryDirectory() + "ferret-gotarget-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let source = dir + "/main.go"
        let program = """
            package main

            import (
            \t"fmt"
            \t"os"
            \t"time"
            )

            var marker = [4]uint64{0x6665727265742d67, 0x0123456789abcdef, 0xfedcba9876543210, 0x42}

            func main() {
            \tfmt.Printf("pid %d\\nmarker %p\\nready\\n", os.Getpid(), &marker)
            \ttime.Sleep(120 * time.Second)
            }

            """
        do {
            try program.write(toFile: source, atomically: true, encoding: .utf8)
        } catch {
            return .failure(FixtureError(description: "\(error)"))
        }
        let pie = dir + "/gotarget-pie", nonPIE = dir + "/gotarget"
        for (out, flags) in [(pie, ["-buildmode=pie"]), (nonPIE, [])] {
            let r = run("/usr/bin/go", ["build"] + flags + ["-o", out, source])
            guard r.status == 0 else { return .failure(FixtureError(description: "go build failed: \(r.output)")) }
        }
        return .success(GoFixtures(pie: pie, nonPIE: nonPIE))
    }()

    static func goFixtures() throws -> GoFixtures { try builtGoFixtures.get() }

    /// Defined symbols of `binary` per `nm`: name → value.
    static func nm(_ binary: String) throws -> [String: UInt64] {
        let r = run("/usr/bin/nm", [binary])
        guard r.status == 0 else { throw FixtureError(description: "nm \(binary) failed: \(r.output)") }
        var out: [String: UInt64] = [:]
        for line in r.output.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 3, let v = UInt64(f[0], radix: 16) { out[String(f[2])] = v }
        }
        return out
    }

    /// Runs a tool to completion; stdout and stderr together.
    static func run(_ path: String, _ arguments: [String]) -> (status: Int32, output: String) {
        guard let p = try? Child.spawn(path, arguments) else { return (-1, "cannot spawn \(path)") }
        var output: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(p.fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            output += buf[..<n]
        }
        close(p.fd)
        var status: Int32 = 0
        while waitpid(p.pid, &status, 0) < 0 && errno == EINTR {}
        let exited = status & 0x7f == 0
        return (exited ? (status >> 8) & 0xff : -1, String(decoding: output, as: UTF8.self))
    }
}

extension ProcessMemoryTests {
    /// A child process started with posix_spawn, its stdout (and stderr) on a pipe; it reports
    /// "key value" lines up to "ready". `stop()` kills it with SIGKILL and reaps it.
    final class Child {
        let pid: Int32
        private let fd: Int32
        private(set) var info: [String: String] = [:]
        private var stopped = false

        private init(pid: Int32, fd: Int32) {
            self.pid = pid
            self.fd = fd
        }

        static func start(_ path: String, arguments: [String] = []) throws -> Child {
            let p = try spawn(path, arguments)
            let child = Child(pid: p.pid, fd: p.fd)
            do {
                try child.readUntilReady()
            } catch {
                child.stop()
                throw error
            }
            guard child.info["pid"] == String(p.pid) else {
                child.stop()
                throw ProcessMemoryTests.FixtureError(description: "\(path) reported pid \(child.info["pid"] ?? "nil"), spawned \(p.pid)")
            }
            return child
        }

        static func spawn(_ path: String, _ arguments: [String]) throws -> (pid: Int32, fd: Int32) {
            var fds: [Int32] = [0, 0]
            guard pipe(&fds) == 0 else { throw ProcessMemoryTests.FixtureError(description: "pipe: \(errno)") }
            for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
            posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
            let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
            defer { for a in argv { free(a) } }
            var pid: pid_t = 0
            let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
            close(fds[1])
            guard rc == 0 else {
                close(fds[0])
                throw ProcessMemoryTests.FixtureError(description: "posix_spawn \(path): \(String(cString: strerror(rc)))")
            }
            return (pid, fds[0])
        }

        private func readUntilReady() throws {
            var text = ""
            var buf = [UInt8](repeating: 0, count: 4096)
            let deadline = Date().addingTimeInterval(30)
            while !text.contains("ready\n") {
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let remaining = Int32(max(0, deadline.timeIntervalSinceNow) * 1000)
                guard remaining > 0 else { throw ProcessMemoryTests.FixtureError(description: "child \(pid) not ready: \(text)") }
                if poll(&pfd, 1, remaining) <= 0 { continue }
                let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw ProcessMemoryTests.FixtureError(description: "child \(pid) exited early: \(text)") }
                text += String(decoding: buf[..<n], as: UTF8.self)
            }
            for line in text.split(separator: "\n") {
                let kv = line.split(separator: " ", maxSplits: 1)
                if kv.count == 2 { info[String(kv[0])] = String(kv[1]) }
            }
        }

        func address(_ key: String) throws -> UInt64 {
            guard let s = info[key], s.hasPrefix("0x"), let v = UInt64(s.dropFirst(2), radix: 16) else {
                throw ProcessMemoryTests.FixtureError(description: "child \(pid): no address '\(key)' in \(info)")
            }
            return v
        }

        func value(_ key: String) throws -> Int {
            guard let s = info[key], let v = Int(s) else {
                throw ProcessMemoryTests.FixtureError(description: "child \(pid): no value '\(key)' in \(info)")
            }
            return v
        }

        func stop() {
            guard !stopped else { return }
            stopped = true
            kill(pid, SIGKILL)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            close(fd)
        }

        deinit { stop() }
    }
}
