import Foundation
import Glibc
import XCTest

@testable import ELFSymbols
@testable import GoBinaryFormat
@testable import GoIntrospection

extension ProcessMemoryTests {
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
}
