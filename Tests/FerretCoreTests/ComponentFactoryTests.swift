@testable import FerretComponents
@testable import FerretCore
import FerretTestSupport
import Foundation
import Logging
@testable import SinkPrometheus
import XCTest

/// Typed two-phase factories: decode an entry into an Equatable Config once
/// (no side effects), make the component from it (nothing bound), start it.
final class ComponentFactoryTests: XCTestCase {
    let logger = Logger(label: "test")

    func entries(_ yaml: String) throws -> [ComponentConfig] {
        try AgentConfig.parse(text: yaml, file: "c.yaml", components: FerretComponents.all).pipeline.sinks
    }

    /// A reload keeps a sink whose decoded Config is equal, however it is
    /// written (5s and 5000ms), and replaces one whose Config changed.
    func testReloadKeepsASinkWhoseConfigIsEqual() throws {
        let dir = TestSupport.tempDir("factory-reload")
        let first = try entries("""
        pipeline:
          sinks:
            - { type: console, every: 5s }
            - { type: jsonl, path: \(dir)/a.jsonl, signals: [metric, event] }
        """)
        var errors: [ConfigError] = []
        let runners = FerretComponents.all.makeSinkRunners(first, logger: logger, errors: &errors)
        XCTAssertTrue(errors.isEmpty, "\(errors)")
        defer { for r in runners { r.shutdown(timeout: 1) } }
        let same = try entries("""
        pipeline:
          sinks:
            - { type: console, every: 5000ms, stream: stdout }
            - { type: jsonl, path: \(dir)/a.jsonl, signals: [event, metric] }
        """)
        let kept = FerretComponents.all.makeSinkRunners(same, logger: logger, reuse: runners, errors: &errors)
        XCTAssertTrue(kept[0] === runners[0], "console: the same Config written another way")
        XCTAssertTrue(kept[1] === runners[1], "jsonl: the same set of signals in another order")
        let changed = try entries("""
        pipeline:
          sinks:
            - { type: console, every: 6s }
            - { type: jsonl, path: \(dir)/a.jsonl, signals: [event, metric], buffer: 1024 }
        """)
        let replaced = FerretComponents.all.makeSinkRunners(changed, logger: logger, reuse: runners, errors: &errors)
        defer { for r in replaced { r.shutdown(timeout: 1) } }
        XCTAssertFalse(replaced[0] === runners[0], "console: every changed")
        XCTAssertFalse(replaced[1] === runners[1], "jsonl: the runner's buffer changed")
        XCTAssertTrue(errors.isEmpty, "\(errors)")
    }

    /// Decoding binds nothing (validation of an address in use passes), making
    /// binds nothing, and `start` binds.
    func testSocketsBindInStartNotInDecodeOrMake() throws {
        let holder = try PrometheusSink(name: "holder", host: "127.0.0.1", port: 0, logger: logger)
        defer { holder.close() }
        let port = try XCTUnwrap(holder.port)
        let entry = try XCTUnwrap(try entries("pipeline:\n  sinks:\n    - { type: prometheus, listen: \"127.0.0.1:\(port)\" }\n").first)
        let d = ConfigDecoder()
        let type = try XCTUnwrap(FerretComponents.all.sinks["prometheus"])
        let decoded = try XCTUnwrap(type.decode(entry, d, context: "in sink 'prometheus'"))
        XCTAssertTrue(d.errors.isEmpty)
        let sink = try XCTUnwrap(try decoded.build(logger: logger) as? PrometheusSink)
        XCTAssertNil(sink.port, "made, not bound")
        let free = try XCTUnwrap(try entries("pipeline:\n  sinks:\n    - { type: prometheus, listen: \"127.0.0.1:0\" }\n").first)
        let other = try XCTUnwrap(try type.decode(free, ConfigDecoder(), context: "")?.build(logger: logger) as? PrometheusSink)
        XCTAssertNil(other.port)
        try other.start()
        defer { other.close() }
        XCTAssertNotNil(other.port, "bound in start")
        sink.close()
    }
}
