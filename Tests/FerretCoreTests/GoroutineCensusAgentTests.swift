import FerretTestSupport
import Foundation
import GoTestSupport
import XCTest

/// The goroutines collector on a process with a million goroutines (issue #19:
/// "a process with 1,000,000 goroutines is sampled, and the event or log says
/// so"). The census fixture parks 1,000,000 goroutines 8 frames deep; the agent
/// takes censuses with the defaults (max_goroutines 200000, stack_budget
/// 64MiB): every 5th G is read and the counts are scaled back, the stacks stop
/// at the budget, each said once by an event, and the bytes read per census
/// stay within what the settings allow.
final class GoroutineCensusAgentTests: XCTestCase {
    static let source = TestSupport.repoRoot + "/Tests/GoIntrospectionTests/Fixtures/census"

    static func pid(_ l: [String: Any]) -> Int32 { (l.resource["process.pid"] as? NSNumber)?.int32Value ?? 0 }
    static func value(_ l: [String: Any]) -> Double { (l["value"] as? NSNumber)?.doubleValue ?? -1 }

    func testAMillionGoroutinesAreSampledWithinTheMemoryBound() throws {
        guard let newest = try GoToolchains.required().last else { throw XCTSkip("no Go toolchain") }
        let binary = try GoToolchains.build(source: Self.source, version: newest.version, flavour: .staticBuild)
        let fixture = Process()
        let input = Pipe(), output = Pipe()
        fixture.executableURL = URL(fileURLWithPath: binary)
        fixture.standardInput = input
        fixture.standardOutput = output
        fixture.standardError = FileHandle.nullDevice
        try fixture.run()
        defer { if fixture.isRunning { kill(fixture.processIdentifier, SIGKILL); fixture.waitUntilExit() } }
        let fd = output.fileHandleForReading.fileDescriptor
        XCTAssertTrue(TestContainer.readLine(fd, timeout: 20).hasPrefix("ready "))
        input.fileHandleForWriting.write(Data("park 1000000\n".utf8))
        XCTAssertEqual(TestContainer.readLine(fd, timeout: 120), "parked")
        let pid = fixture.processIdentifier
        let expected = 1_000_000.0 + 117  // the parked ones and the fixture's steady 117

        let dir = TestSupport.tempDir("census-million")
        TestSupport.shippedManifest(in: dir + "/plugins.d", name: "goroutines")
        let config = """
        agent: { interval: 1s, self_metrics_interval: 60s }
        plugins: { paths: [plugins.d] }
        rules:
          - name: million
            match: { pid: [\(pid)] }
            collectors:
              goroutines: { census_interval: 5s, timeout: 30s }
        pipeline:
          sinks: [ { type: jsonl, path: \(dir)/out.jsonl } ]
        """
        let agent = try TestSupport.AgentProcess(config: config, dir: dir)
        defer { agent.stop() }
        let sampled = try agent.waitFor("go.goroutine.census.sampled", timeout: 90) {
            $0.signal == "event" && $0.name == "go.goroutine.census.sampled" && Self.pid($0) == pid
        }
        let allocated = (sampled.attributes["go.goroutine.allocated"] as? NSNumber)?.doubleValue ?? 0
        let read = (sampled.attributes["go.goroutine.read"] as? NSNumber)?.doubleValue ?? 0
        XCTAssertGreaterThanOrEqual(allocated, expected, "every G allocated is counted")
        XCTAssertLessThanOrEqual(read, 200_000, "at most max_goroutines Gs are read")
        XCTAssertGreaterThan(read, 150_000)
        let budget = try agent.waitFor("go.goroutine.census.budget", timeout: 30) {
            $0.signal == "event" && $0.name == "go.goroutine.census.budget" && Self.pid($0) == pid
        }
        XCTAssertEqual((budget.attributes["stack_budget"] as? NSNumber)?.intValue, 64 << 20)
        XCTAssertGreaterThan((budget.attributes["go.goroutine.unstacked"] as? NSNumber)?.intValue ?? 0, 0)

        // The scaled counts stand for the whole: within 1 % of the goroutines alive.
        let bytes = try agent.waitFor("go.goroutine.census.read", timeout: 30) { $0.name == "go.goroutine.census.read" && Self.pid($0) == pid }
        let t = bytes["time_unix_nano"] as? NSNumber
        let states = agent.lines().filter { $0.name == "go.goroutine.state.count" && Self.pid($0) == pid && ($0["time_unix_nano"] as? NSNumber) == t }
        let total = states.map(Self.value).reduce(0, +)
        XCTAssertEqual(total, expected, accuracy: expected * 0.01, "scaled state counts: \(states.map { ($0.attributes["go.goroutine.state"] ?? "", Self.value($0)) })")
        let parked = agent.lines().filter {
            $0.name == "go.goroutine.group.count" && Self.pid($0) == pid && ($0["time_unix_nano"] as? NSNumber) == t
                && ($0.attributes["go.goroutine.creator"] as? String) == "main.parkN"
        }.map(Self.value).reduce(0, +)
        XCTAssertEqual(parked, 1_000_000, accuracy: 10_000, "the parked goroutines, created by main.parkN (stacked or not)")
        // Bounded memory: the allgs array, the G structs read (under 1 KiB each;
        // those with a stack read twice, for the torn-read check), the stack
        // budget, and the torn-read retries.
        let bound = 8.0 * allocated + 1536 * read + Double(64 << 20) + 4 * 1024 * 1024
        XCTAssertLessThanOrEqual(Self.value(bytes), bound, "bytes read per census")
        XCTAssertEqual(kill(pid, 0), 0, "the fixture is alive")
        print("GoroutineCensusAgentTests: \(Int(allocated)) Gs allocated, \(Int(read)) read; state counts sum to \(Int(total)); "
            + "parkN groups \(Int(parked)); \(Int(Self.value(bytes))) bytes read per census (bound \(Int(bound)))")
        XCTAssertEqual(agent.stop(), 0)
    }
}
