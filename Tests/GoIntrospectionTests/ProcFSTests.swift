import Foundation
@testable import ELFSymbols
@testable import GoBinaryFormat
@testable import GoIntrospection
import GoTestSupport
import XCTest

/// /proc parsing against a recorded procfs tree (injectable root) and the live one.
final class ProcFSTests: XCTestCase {
    func testRecordedProcfsTree() throws {
        let root = NSTemporaryDirectory() + "ferret-procfs-\(getpid())"
        let p = root + "/4242"
        try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        // comm with spaces and parentheses: fields resume after the last ')'.
        try "4242 (we ird) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 7 0 987654 1000000 200 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
            .write(toFile: p + "/stat", atomically: true, encoding: .utf8)
        try "we ird) (x\n".write(toFile: p + "/comm", atomically: true, encoding: .utf8)
        try "/usr/bin/srv\0--port\0080\0\0".write(toFile: p + "/cmdline", atomically: true, encoding: .utf8)
        try "Name:\tsrv\nUid:\t65534\t65534\t65534\t65534\nThreads:\t7\n".write(toFile: p + "/status", atomically: true, encoding: .utf8)
        try "12:cpu,cpuacct:/legacy\n0::/system.slice/srv.service\n".write(toFile: p + "/cgroup", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: p + "/exe", withDestinationPath: "/bin/sleep")
        try FileManager.default.createDirectory(atPath: root + "/self", withIntermediateDirectories: true)

        let fs = ProcFS(root: root)
        XCTAssertEqual(fs.pids(), [4242])
        let f = try XCTUnwrap(fs.facts(pid: 4242))
        XCTAssertEqual(f.ppid, 1)
        XCTAssertEqual(f.startTicks, 987654)
        XCTAssertEqual(f.comm, "we ird) (x")
        XCTAssertEqual(f.cmdline, ["/usr/bin/srv", "--port", "080"])
        XCTAssertEqual(f.uid, 65534)
        XCTAssertEqual(f.user, "nobody")
        XCTAssertEqual(f.cgroup, "/system.slice/srv.service")
        XCTAssertEqual(f.exePath, "/bin/sleep")
        XCTAssertEqual(f.isGo, false)
        XCTAssertNil(fs.facts(pid: 1), "a missing process is nil, not an error")
        XCTAssertEqual(try ProcessTasks.threadCount(pid: 4242, procRoot: root), 7)
    }

    func testLiveProcessAndExitedProcess() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sleep")
        p.arguments = ["30"]
        try p.run()
        let fs = ProcFS()
        // Right after spawning, the child may not have exec'd yet; and during
        // exec the kernel sets comm before the new command line exists.
        var f = try XCTUnwrap(fs.facts(pid: p.processIdentifier))
        try Wait.until("sleep's comm and command line", timeout: 2, poll: 0.01) {
            f = try XCTUnwrap(fs.facts(pid: p.processIdentifier))
            return f.comm == "sleep" && !f.cmdline.isEmpty
        }
        XCTAssertEqual(f.comm, "sleep")
        XCTAssertEqual(f.cmdline, ["/bin/sleep", "30"])
        XCTAssertEqual(f.ppid, getpid())
        XCTAssertEqual(fs.startTicks(pid: p.processIdentifier), f.startTicks)
        p.terminate()
        p.waitUntilExit()
        XCTAssertNil(fs.facts(pid: p.processIdentifier))
        XCTAssertNil(fs.startTicks(pid: p.processIdentifier))
    }
}
