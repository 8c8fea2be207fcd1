import Foundation
import GoTestSupport
import XCTest

@testable import ELFSymbols
@testable import GoBinaryFormat
@testable import GoIntrospection

/// ObjectSymbols and ProcessSymbolizer on native code: a PIE C program
/// symbolized in a live process (ASLR through the mapping offset), a stripped
/// copy symbolized through its debug file found by build id, and unknown
/// addresses kept with their mapping.
final class SymbolizerTests: XCTestCase {
    static let source = """
    #include <stdio.h>
    #include <unistd.h>
    __attribute__((noinline)) int native_marker_function(int x) { return x * 3 + 1; }
    int main(void) { printf("%p\\n", (void *)native_marker_function); fflush(stdout); pause(); return native_marker_function(2); }
    """

    func compile(_ dir: String) throws -> String {
        let c = dir + "/marker.c", exe = dir + "/marker"
        try Self.source.write(toFile: c, atomically: true, encoding: .utf8)
        let r = try GoToolchains.run("/usr/bin/cc", ["-O1", "-g", "-fPIE", "-pie", "-Wl,--build-id", "-o", exe, c])
        XCTAssertEqual(r.0, 0, r.1)
        return exe
    }

    func testPIEProcessAndUnknownAddresses() throws {
        let dir = NSTemporaryDirectory() + "ferret-symb-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let exe = try compile(dir)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        defer { p.terminate() }
        let line = String(decoding: out.fileHandleForReading.availableData, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let address = try XCTUnwrap(UInt64(line.dropFirst(2), radix: 16), line)
        let s = try ProcessSymbolizer(pid: p.processIdentifier)
        let loc = s.symbolize(address + 2, isReturnAddress: false)
        XCTAssertEqual(loc.frames.first?.function, "native_marker_function", "\(loc)")
        XCTAssertEqual(loc.mapping?.path, exe)
        XCTAssertFalse(loc.mapping?.buildID.isEmpty ?? true, "build id recorded")
        // Return addresses are looked up one byte earlier: the entry + 0 as a return
        // address belongs to whatever precedes the function.
        XCTAssertNotEqual(s.symbolize(address, isReturnAddress: true).frames.first?.function, "native_marker_function")
        // An address in no mapping: kept, no frames, no mapping.
        let none = s.symbolize(0x10, isReturnAddress: false)
        XCTAssertEqual(none.address, 0x10)
        XCTAssertTrue(none.frames.isEmpty)
        XCTAssertNil(none.mapping)
    }

    func testStrippedObjectUsesDebugFileByBuildID() throws {
        let dir = NSTemporaryDirectory() + "ferret-symd-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let exe = try compile(dir)
        let full = try ObjectSymbols(path: exe)
        let id = full.buildID
        XCTAssertGreaterThan(id.count, 8)
        let fn = try XCTUnwrap(full.elf.readSymbols().first { $0.name == "native_marker_function" })
        // Split the debug information out, as Debian's -dbgsym packages do, and strip.
        let debugDir = dir + "/debug/.build-id/" + id.prefix(2)
        try FileManager.default.createDirectory(atPath: debugDir, withIntermediateDirectories: true)
        let debugFile = debugDir + "/" + id.dropFirst(2) + ".debug"
        XCTAssertEqual(try GoToolchains.run("/usr/bin/objcopy", ["--only-keep-debug", exe, debugFile]).0, 0)
        XCTAssertEqual(try GoToolchains.run("/usr/bin/strip", ["--strip-all", exe]).0, 0)
        let bare = try ObjectSymbols(path: exe, debugRoots: [dir + "/nowhere"])
        XCTAssertTrue(bare.frames(at: fn.value + 1).first?.function != "native_marker_function",
                      "stripped: not in .dynsym")
        let withDebug = try ObjectSymbols(path: exe, debugRoots: [dir + "/debug"])
        XCTAssertEqual(withDebug.frames(at: fn.value + 1).first?.function, "native_marker_function")
        XCTAssertTrue(withDebug.nativeSource.hasPrefix("debug file"), withDebug.nativeSource)
    }
}
