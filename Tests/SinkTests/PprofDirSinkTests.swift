@testable import FerretComponents
@testable import FerretCore
import FerretTestSupport
import Foundation
import GoTestSupport
import Logging
@testable import SinkPprofDir
import XCTest

/// The pprof_dir sink: files named by group, pid and start; the path recorded for
/// the sinks after it; size and age caps remove the oldest files first.
final class PprofDirSinkTests: XCTestCase {
    func profile(pid: Int64, group: String, start: UInt64, bytes: Int) -> Signal {
        .profile(Profile(data: [UInt8](repeating: 0x1f, count: bytes), profileType: "cpu", startUnixNano: start,
                         durationNano: 10_000_000_000, samples: 5, path: nil, attributes: [],
                         resource: Resource([Attribute("process.pid", .int(pid)), Attribute("ferret.group", .string(group))])))
    }

    func testWritesAnnotatesAndCapsBySize() throws {
        let dir = TestSupport.tempDir("pprofdir") + "/profiles"
        let sink = try PprofDirSink(directory: dir, maxBytes: 25_000)
        var batch = [profile(pid: 7, group: "api/v1", start: 1, bytes: 10_000), profile(pid: 8, group: "..", start: 2, bytes: 10_000)]
        try sink.annotate(&batch)
        guard case .profile(let p) = batch[0] else { return XCTFail("not a profile") }
        XCTAssertEqual(p.path, dir + "/api_v1/7-1.pb.gz", "a group's slash cannot escape the directory")
        guard case .profile(let q) = batch[1] else { return XCTFail("not a profile") }
        XCTAssertEqual(q.path, dir + "/_/8-2.pb.gz")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: p.path!)).count, 10_000)
        // A third file passes the 25,000-byte cap: the oldest goes.
        var more = [profile(pid: 7, group: "api/v1", start: 3, bytes: 10_000)]
        try sink.annotate(&more)
        XCTAssertFalse(FileManager.default.fileExists(atPath: p.path!), "oldest removed")
        XCTAssertTrue(FileManager.default.fileExists(atPath: q.path!))
        XCTAssertEqual(sink.usage.files, 2)
        XCTAssertEqual(sink.usage.bytes, 20_000)
        // A new sink over the same directory counts what is there.
        let again = try PprofDirSink(directory: dir, maxBytes: 25_000)
        XCTAssertEqual(again.usage.files, 2)
    }

    func testAgeCapAndPipelineOrder() throws {
        let dir = TestSupport.tempDir("pprofage")
        let pprofSink = try PprofDirSink(directory: dir + "/p", maxAge: .seconds(1))
        let memory = MemorySink()
        let logger = Logger(label: "test")
        let pipeline = Pipeline(queueSize: 64, sinks: [
            SinkRunner(name: "mem", type: "memory", identity: "m", sink: memory, buffer: 64, logger: logger),
            SinkRunner(name: "pprof", type: "pprof_dir", identity: "p", sink: pprofSink, buffer: 64, logger: logger),
        ], logger: logger)
        pipeline.start()
        XCTAssertTrue(pipeline.submit([profile(pid: 1, group: "g", start: 10, bytes: 100)]))
        let deadline = Date().addingTimeInterval(5)
        Wait.until("the first profile in the memory sink", timeout: 5) { !memory.signals.isEmpty }
        guard case .profile(let p)? = memory.signals.first else { return XCTFail("no profile reached the memory sink") }
        XCTAssertEqual(p.path, dir + "/p/g/1-10.pb.gz", "the sink listed first still sees the path: pprof_dir stands ahead")
        sleep(2)  // the file ages past max_age (1 s): the time itself is under test, not a wait
        XCTAssertTrue(pipeline.submit([profile(pid: 1, group: "g", start: 20, bytes: 100)]))
        Wait.until("the second profile in the memory sink", timeout: deadline.addingTimeInterval(5).timeIntervalSinceNow) {
            memory.signals.count >= 2
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: p.path!), "older than max_age: removed")
        pipeline.shutdown()
    }

    func testConfigErrorsNameThePlace() throws {
        let yaml = """
        pipeline:
          sinks:
            - type: pprof_dir
              max_age: 10 parsecs
        """
        XCTAssertThrowsError(try AgentConfig.parse(text: yaml, file: "c.yaml", components: FerretComponents.all)) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("c.yaml:3:"), text)
            XCTAssertTrue(text.contains("path"), text)
        }
    }
}
