import Foundation
import Glibc
import XCTest

@testable import ELFSymbols
@testable import GoBinaryFormat
@testable import GoIntrospection

extension ProcessMemoryTests {
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
}
