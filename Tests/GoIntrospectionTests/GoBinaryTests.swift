import Foundation
@testable import ELFSymbols
@testable import GoBinaryFormat
@testable import GoIntrospection
import GoTestSupport
import XCTest

/// Build info, pclntab and the runtime-globals locator, checked against Go's
/// own tools and runtime on every toolchain here, in three flavours.
final class GoBinaryTests: XCTestCase {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/symprog").path

    /// Every toolchain × {plain, static, stripped static}; built once per run (cached on disk).
    static let builds: Result<[(version: String, flavour: GoToolchains.Flavour, path: String)], any Error> = Result {
        try GoToolchains.buildAll(source: fixture, flavours: GoToolchains.Flavour.standard)
    }

    func builds() throws -> [(version: String, flavour: GoToolchains.Flavour, path: String)] {
        let b = try Self.builds.get()
        XCTAssertGreaterThanOrEqual(b.count, 24, "8 toolchains × 3 flavours")
        return b
    }

    static func run(_ exe: String, _ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(["GOTOOLCHAIN": "local", "GOPROXY": "off", "GOFLAGS": "-mod=mod"]) { $1 }
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw IntrospectionError("\(exe) \(args.joined(separator: " ")) exited \(p.terminationStatus)") }
        return String(decoding: data, as: UTF8.self)
    }

    func testBuildInfoMatchesGoVersionM() throws {
        for b in try builds() {
            let go = try GoToolchains.go(for: b.version)
            let text = try Self.run(go, ["version", "-m", b.path])
            let lines = text.split(separator: "\n").map(String.init)
            let info = try XCTUnwrap(try GoBuildInfo.read(from: ELFFile(path: b.path)), "\(b)")
            XCTAssertEqual(info.goVersion, b.version, "\(b.path)")
            XCTAssertTrue(lines[0].hasSuffix(": \(info.goVersion)"), "\(lines[0]) vs \(info.goVersion)")
            var settings: [String] = []
            for l in lines.dropFirst() {
                let f = l.split(separator: "\t", omittingEmptySubsequences: false).map(String.init).dropFirst()
                switch f.first {
                case "mod": XCTAssertEqual(info.main?.path, f.dropFirst().first, b.path); XCTAssertEqual(info.main?.version, f.dropFirst(2).first, b.path)
                case "build": settings.append(f.dropFirst().joined(separator: "\t"))
                default: break
                }
            }
            XCTAssertEqual(info.settings.map { "\($0.key)=\($0.value)" }, settings, b.path)
            XCTAssertEqual(info.setting("CGO_ENABLED"), b.flavour == .plain ? info.setting("CGO_ENABLED") : "0")
            if b.flavour == .strippedStatic { XCTAssertEqual(info.setting("-ldflags"), "\"-s -w\"", b.path) }
        }
    }

    func testFunctionLookupsMatchGoToolNm() throws {
        for b in try builds() where b.flavour != .strippedStatic {
            let nm = try Self.run(try GoToolchains.go(for: b.version), ["tool", "nm", b.path])
            let binary = try GoBinary(path: b.path)
            let table = try binary.pclnTable()
            var checked = 0
            for line in nm.split(separator: "\n") {
                let f = line.split(separator: " ", omittingEmptySubsequences: true)
                guard f.count >= 3, f[1] == "T", let addr = UInt64(f[0], radix: 16) else { continue }
                let name = f[2...].joined(separator: " ")
                let candidates = table.functions(named: name)
                guard !candidates.isEmpty else { continue } // assembly labels are not functions
                // ABI wrappers share a name: the symbol is one of them.
                guard let fn = candidates.first(where: { $0.entry == addr }) else {
                    XCTFail("\(b.path): no function \(name) at 0x\(String(addr, radix: 16)); have \(candidates.map { String($0.entry, radix: 16) })")
                    continue
                }
                XCTAssertEqual(table.function(containing: addr)?.name, name, "\(b.path): function at 0x\(String(addr, radix: 16))")
                XCTAssertEqual(table.function(containing: addr + fn.size - 1)?.name, name, "\(b.path): last byte of \(name)")
                checked += 1
            }
            XCTAssertGreaterThan(checked, 1000, b.path)
            XCTAssertGreaterThanOrEqual(table.functionCount, checked)
        }
    }

    func testStrippedBuildHasTheSameFunctionsAsItsStaticTwin() throws {
        let all = try builds()
        for s in all where s.flavour == .strippedStatic {
            let twin = try XCTUnwrap(all.first { $0.version == s.version && $0.flavour == .staticBuild })
            let a = try GoBinary(path: s.path), b = try GoBinary(path: twin.path)
            XCTAssertTrue(a.isStripped)
            XCTAssertFalse(a.hasDWARF)
            let fa = try a.pclnTable().allFunctions(), fb = try b.pclnTable().allFunctions()
            XCTAssertEqual(fa.map(\.name), fb.map(\.name), s.path)
            XCTAssertEqual(fa.map(\.entry), fb.map(\.entry), s.path)
        }
    }

    /// Inlined frames, file and line agree with the program's own runtime.
    /// runtime.Callers reports one PC per logical frame (an inlined call's
    /// callers follow as extra PCs), so the full expansion of a PC must equal
    /// the runtime's frames for that PC and the ones after it.
    func testFramesMatchRuntimeCallersFrames() throws {
        for b in try builds() {
            let out = try Self.run(b.path, [])
            var stacks: [[(pc: UInt64, frame: PclnTable.Frame)]] = []
            for line in out.split(separator: "\n") {
                if line == "STACK" { stacks.append([]); continue }
                let parts = line.split(separator: " ", maxSplits: 2)
                guard parts.count == 3, parts[0] == "PC", let pc = UInt64(parts[1], radix: 16), !stacks.isEmpty else { continue }
                let f = parts[2].split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
                guard f.count == 3, let l = Int(f[2]) else { continue }
                stacks[stacks.count - 1].append((pc, PclnTable.Frame(function: f[0], file: f[1], line: l, inlined: false, startLine: 0)))
            }
            XCTAssertEqual(stacks.count, 2, "\(b.path) printed:\n\(out)")
            let table = try GoBinary(path: b.path).pclnTable()
            XCTAssertTrue(table.hasInlineTree, "\(b.path): the go:func.* area was not found")
            var expansions = 0, physical = 0
            for stack in stacks {
                XCTAssertGreaterThan(stack.count, 4, b.path)
                var i = 0
                while i < stack.count {
                    let ours = table.frames(at: stack[i].pc - 1)
                    guard !ours.isEmpty, i + ours.count <= stack.count else {
                        XCTFail("\(b.path): pc 0x\(String(stack[i].pc, radix: 16)) gives \(ours.count) frames at position \(i) of \(stack.count)")
                        break
                    }
                    let want = stack[i..<(i + ours.count)].map(\.frame)
                    let at = "\(b.path) pc 0x\(String(stack[i].pc, radix: 16))"
                    XCTAssertEqual(ours.map(\.function), want.map(\.function), at)
                    XCTAssertEqual(ours.map(\.file), want.map(\.file), at)
                    XCTAssertEqual(ours.map(\.line), want.map(\.line), at)
                    XCTAssertEqual(ours.map(\.inlined), ours.indices.map { $0 < ours.count - 1 }, at)
                    if ours.count > 1 { expansions += 1 }
                    physical += 1
                    i += ours.count
                }
            }
            XCTAssertGreaterThan(expansions, 0, "\(b.path): no inlined call was expanded")
            // main.inlinedOuter and main.inlinedMiddle really were inlined into main.top.
            let first = table.frames(at: stacks[0][1].pc - 1)
            XCTAssertEqual(first.map(\.function), ["main.inlinedMiddle", "main.inlinedOuter", "main.top"], b.path)
            XCTAssertGreaterThan(physical, 4)
        }
    }

    func testRuntimeGlobalsFromTheSymbolTable() throws {
        for b in try builds() {
            let binary = try GoBinary(path: b.path)
            let globals = binary.runtimeGlobals()
            XCTAssertEqual(globals.map(\.name), RuntimeGlobalsLocator.names)
            if b.flavour == .strippedStatic {
                // No symbol table: found in code (CodeReferenceTests compares them with .symtab).
                XCTAssertTrue(globals.allSatisfy { $0.address != nil && $0.source == "code" && $0.evidence.count >= 2 }, "\(b.path): \(globals)")
                continue
            }
            let nm = try Self.run(try GoToolchains.go(for: b.version), ["tool", "nm", b.path])
            var addr: [String: UInt64] = [:]
            for line in nm.split(separator: "\n") {
                let f = line.split(separator: " ", omittingEmptySubsequences: true)
                if f.count >= 3, let a = UInt64(f[0], radix: 16) { addr[String(f[2])] = a }
            }
            for g in globals {
                XCTAssertEqual(g.source, "symtab", "\(b.path) \(g.name): \(g.problem ?? "")")
                XCTAssertEqual(g.address, addr[g.name], "\(b.path) \(g.name)")
            }
        }
    }

    func testNonGoBinariesAreReportedAsSuch() throws {
        let sleep = try GoBinary(path: "/bin/sleep")
        XCTAssertFalse(sleep.isGo)
        XCTAssertNil(sleep.goVersion)
        XCTAssertFalse(sleep.isStatic)
        XCTAssertThrowsError(try sleep.pclnTable())
        XCTAssertTrue(sleep.runtimeGlobals().allSatisfy { $0.problem == "not a Go binary" })

        let dir = NSTemporaryDirectory() + "ferret-nongo-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "int main(void) { return 0; }\n".write(toFile: dir + "/c.c", atomically: true, encoding: .utf8)
        _ = try Self.run("/usr/bin/cc", ["-static", "-o", dir + "/c", dir + "/c.c"])
        let c = try GoBinary(path: dir + "/c")
        XCTAssertFalse(c.isGo)
        XCTAssertTrue(c.isStatic)
        XCTAssertFalse(c.isStripped)

        try "not an executable".write(toFile: dir + "/garbage", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try GoBinary(path: dir + "/garbage")) { e in
            XCTAssertEqual("\(e)", "\(dir)/garbage: not an ELF file")
        }
        XCTAssertThrowsError(try GoBinary(path: dir + "/missing")) { e in
            XCTAssertEqual("\(e)", "\(dir)/missing: cannot open: No such file or directory")
        }
    }

    func testCacheParsesABinaryOnce() throws {
        let path = try builds()[0].path
        let a = try GoBinaryCache.binary(path: path), b = try GoBinaryCache.binary(path: path)
        XCTAssertTrue(a === b)
        XCTAssertTrue(try a.pclnTable() === b.pclnTable())
    }

    func testPIEBuilds() throws {
        for version in GoToolchains.all.map(\.version).suffix(3) {
            let path = NSTemporaryDirectory() + "ferret-pie-\(getpid())-\(version)"
            _ = try Self.run(try GoToolchains.go(for: version), ["build", "-C", Self.fixture, "-buildmode=pie", "-o", path, "."])
            let binary = try GoBinary(path: path)
            XCTAssertTrue(binary.isPIE, path)
            let table = try binary.pclnTable()
            let nm = try Self.run(try GoToolchains.go(for: version), ["tool", "nm", path])
            let top = try XCTUnwrap(nm.split(separator: "\n").first { $0.hasSuffix(" T main.top") })
            XCTAssertEqual(table.function(named: "main.top")?.entry, UInt64(top.split(separator: " ")[0], radix: 16), path)
            XCTAssertTrue(table.hasInlineTree, path)
        }
    }
}
