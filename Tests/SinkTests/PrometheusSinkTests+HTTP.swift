@testable import FerretComponents
@testable import FerretCore
@testable import FerretHTTPServer
import FerretTestSupport
import Foundation
import GoTestSupport
import Logging
@testable import SinkPrometheus
import XCTest

/// The prometheus sink's HTTP server: both formats, errors, a port in use, close.
extension PrometheusSinkTests {
    // MARK: - HTTP

    func testServesBothFormatsOverHTTP() throws {
        let sink = try PrometheusSink(name: "prom", host: "127.0.0.1", port: 0, path: "/m", logger: Logger(label: "test"))
        defer { sink.close() }
        let port = try XCTUnwrap(sink.port)
        try sink.write([Self.gauge("go.goroutine.count", 12, unit: "{goroutine}", Self.process(3))])

        let plain = try HTTP.get(port: port, path: "/m")
        XCTAssertEqual(plain.status, 200)
        XCTAssertEqual(plain.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        XCTAssertTrue(plain.text.contains(#"go_goroutine_count{ferret_group="api",ferret_rule="go",process_pid="3",process_executable_name="srv",host_name="h"} 12"#), plain.text)
        XCTAssertFalse(plain.text.contains("# EOF"))

        let om = try HTTP.get(port: port, path: "/m", headers: ["Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"])
        XCTAssertEqual(om.headers["content-type"], "application/openmetrics-text; version=1.0.0; charset=utf-8")
        XCTAssertTrue(om.text.hasSuffix("# EOF\n"), om.text)

        XCTAssertEqual(try HTTP.get(port: port, path: "/metrics").status, 404)
        XCTAssertEqual(try HTTP.get(port: port, path: "/m", method: "POST").status, 405)
        XCTAssertEqual(try HTTP.get(port: port, path: "/m?x=1").status, 200)

        sink.close()
        XCTAssertThrowsError(try HTTP.get(port: port, path: "/m"), "closed: the port is released")
    }

    func testAPortInUseIsAConfigErrorNamingSinkAndAddress() throws {
        let first = try PrometheusSink(name: "one", host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        defer { first.close() }
        let port = try XCTUnwrap(first.port)
        let yaml = """
        pipeline:
          sinks:
            - type: prometheus
              name: second
              listen: 127.0.0.1:\(port)
        """
        let config = try AgentConfig.parse(text: yaml, file: "c.yaml", components: FerretComponents.all)
        var errors: [ConfigError] = []
        let runners = FerretComponents.all.makeSinkRunners(config.pipeline.sinks, logger: Logger(label: "test"), errors: &errors)
        XCTAssertTrue(runners.isEmpty)
        let text = errors.map { "\($0)" }.joined(separator: "\n")
        XCTAssertTrue(text.contains("c.yaml:3:"), text)
        XCTAssertTrue(text.contains("sink 'second' (prometheus)"), text)
        XCTAssertTrue(text.contains("cannot listen on 127.0.0.1:\(port): address already in use"), text)
        XCTAssertEqual(try HTTP.get(port: port, path: "/metrics").status, 200, "the first one still serves")
    }

    /// A reload that changes the sink's settings builds the new sink before
    /// closing the old one: the new one takes the address once it is free.
    func testANewSinkOnTheSameAddressWaitsForTheOldOne() throws {
        let probe = try PrometheusSink(name: "probe", host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        let port = try XCTUnwrap(probe.port)
        probe.close()
        let old = try PrometheusSink(name: "old", host: "127.0.0.1", port: port, logger: Logger(label: "test"))
        let new = try PrometheusSink(name: "new", host: "127.0.0.1", port: port, path: "/new", logger: Logger(label: "test"))
        defer { new.close() }
        XCTAssertNil(new.port, "waiting")
        old.close()
        Wait.until("the new sink listening", timeout: 5, poll: 0.1) {
            if new.port != nil { return true }
            try? new.flush()
            return false
        }
        XCTAssertEqual(new.port, port)
        XCTAssertEqual(try HTTP.get(port: port, path: "/new").status, 200)
    }

    func testConfigKeys() throws {
        let yaml = """
        pipeline:
          sinks:
            - type: prometheus
              listen: "nonsense"
              path: metrics
              expire_after: 10 parsecs
              colour: red
        """
        XCTAssertThrowsError(try AgentConfig.parse(text: yaml, file: "c.yaml", components: FerretComponents.all)) { e in
            XCTAssertTrue("\(e)".contains("c.yaml:7:"), "\(e)")
            XCTAssertTrue("\(e)".contains("unknown key 'colour'"), "\(e)")
        }
        // Loading checks the values without binding (what `ferret validate` runs).
        XCTAssertThrowsError(try AgentConfig.parse(text: yaml.replacingOccurrences(of: "\n      colour: red", with: ""), file: "c.yaml", components: FerretComponents.all)) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("c.yaml:4:") && text.contains("invalid 'listen' address 'nonsense'"), text)
            XCTAssertTrue(text.contains("c.yaml:5:") && text.contains("invalid 'path' 'metrics'"), text)
            XCTAssertTrue(text.contains("c.yaml:6:") && text.contains("expire_after"), text)
        }

        XCTAssertEqual(ListenAddress.parse(":9100")?.host, "0.0.0.0")
        XCTAssertEqual(ListenAddress.parse("[::1]:9100")?.host, "::1")
        XCTAssertEqual(ListenAddress.parse("localhost:80")?.port, 80)
        XCTAssertNil(ListenAddress.parse("::1:9100"))
        XCTAssertNil(ListenAddress.parse("127.0.0.1:70000"))
    }
}
