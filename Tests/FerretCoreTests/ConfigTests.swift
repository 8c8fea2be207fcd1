@testable import FerretComponents
@testable import FerretCore
import FerretTestSupport
import Foundation
import XCTest

final class ConfigTests: XCTestCase {
    let plugins: Set<String> = ["scheduler", "heap", "fdcount"]

    func parse(_ yaml: String, env: [String: String] = [:]) throws -> AgentConfig {
        try AgentConfig.parse(text: yaml, file: "config.yaml", knownPlugins: { _ in self.plugins }, components: FerretComponents.all, environment: env)
    }

    func errors(_ yaml: String, env: [String: String] = [:]) -> [String] {
        do {
            _ = try parse(yaml, env: env)
            return []
        } catch let e as ConfigErrors {
            return e.errors.map(\.description)
        } catch {
            return ["\(error)"]
        }
    }

    func testFullSchemaDecodes() throws {
        let c = try parse("""
        agent:
          interval: 500ms
        plugins:
          paths: [plugins.d]
        rules:
          - name: go-services
            match:
              runtime: go
              exe: "*/truthsrv"
              comm: "truthsrv"
              cmdline: "-port [0-9]+"
              user: "root"
              cgroup: "*"
            group: "{exe.name}"
            collectors:
              scheduler: {}
              heap: { interval: 2s, depth: 3 }
          - name: everything-else
            match: {}
            collectors: {}
        pipeline:
          aggregators: []
          sinks:
            - type: console
            - type: jsonl
              path: ferret.jsonl
        """)
        XCTAssertEqual(c.agent.interval, .milliseconds(500))
        XCTAssertEqual(c.rules.map(\.name), ["go-services", "everything-else"])
        XCTAssertEqual(c.rules[0].match.runtime, .go)
        XCTAssertEqual(c.rules[0].collectors.map(\.plugin), ["scheduler", "heap"])
        XCTAssertEqual(c.rules[0].collectors[0].interval, .milliseconds(500), "rule inherits the agent interval")
        XCTAssertEqual(c.rules[0].collectors[1].interval, .seconds(2))
        XCTAssertEqual(c.rules[0].collectors[1].json, "{\"depth\":3}", "host keys are removed from the plugin's JSON")
        XCTAssertEqual(c.pipeline.sinks.map(\.type), ["console", "jsonl"])
        XCTAssertTrue(c.pluginPaths[0].hasSuffix("/plugins.d"))
    }

    func testMalformedYAMLNamesLineAndColumn() {
        let e = errors("agent:\n  interval: 1s\n rules: [\n")
        XCTAssertEqual(e.count, 1)
        XCTAssertTrue(e[0].hasPrefix("config.yaml:3:"), e[0])
        XCTAssertTrue(e[0].contains("could not parse YAML"), e[0])
    }

    func testUnknownKeyWithSuggestion() {
        let e = errors("""
        rules:
          - name: go-services
            match: {}
            intervall: 1s
        """)
        XCTAssertEqual(e, ["config.yaml:4:5: unknown key 'intervall' in rule 'go-services' (did you mean 'interval'?)"])
    }

    func testWrongType() {
        let e = errors("agent:\n  interval: [1, 2]\n")
        XCTAssertEqual(e, ["config.yaml:2:13: expected a duration like '500ms', '1s' or '5m' for 'interval' in 'agent', got a sequence"])
        let e2 = errors("rules: {a: 1}\n")
        XCTAssertEqual(e2, ["config.yaml:1:8: expected a sequence for 'rules', got a mapping"])
    }

    func testUnknownPlugin() {
        let e = errors("""
        rules:
          - name: go
            match: { runtime: go }
            collectors:
              schedular: {}
        """)
        XCTAssertEqual(e.count, 1)
        XCTAssertTrue(e[0].hasPrefix("config.yaml:5:7: unknown plugin 'schedular' in rule 'go' (did you mean 'scheduler'?)"), e[0])
    }

    func testBadDuration() {
        XCTAssertEqual(errors("agent:\n  interval: 10 parsecs\n"),
                       ["config.yaml:2:13: invalid duration '10 parsecs' for 'interval' in 'agent': unknown unit ' parsecs' (use ns, us, ms, s, m or h)"])
        XCTAssertEqual(errors("agent:\n  interval: 5\n"),
                       ["config.yaml:2:13: invalid duration '5' for 'interval' in 'agent': missing unit after 5.0 (use ns, us, ms, s, m or h)"])
        XCTAssertEqual(errors("agent:\n  interval: 10ms\n"),
                       ["config.yaml:2:13: 'interval' must be at least 100ms in 'agent', got '10ms'"])
    }

    func testBadRegex() {
        let e = errors("""
        rules:
          - name: r
            match:
              cmdline: "([a-"
        """)
        XCTAssertEqual(e.count, 1)
        XCTAssertTrue(e[0].hasPrefix("config.yaml:4:16: invalid regular expression '([a-' for 'cmdline' in rule 'r'"), e[0])
    }

    func testEnvironmentExpansion() throws {
        let c = try parse("""
        agent:
          interval: ${FERRET_TEST_INTERVAL}
          hostname: ${FERRET_TEST_UNSET:-fallback-host}
        """, env: ["FERRET_TEST_INTERVAL": "3s"])
        XCTAssertEqual(c.agent.interval, .seconds(3))
        XCTAssertEqual(c.agent.hostname, "fallback-host")
        let e = errors("agent:\n  hostname: ${NOPE}\n")
        XCTAssertEqual(e, ["config.yaml:2:13: environment variable 'NOPE' is not set (write ${NOPE:-default} to give a default)"])
    }

    func testDurations() throws {
        XCTAssertEqual(try DurationParser.parse("500ms").get(), .milliseconds(500))
        XCTAssertEqual(try DurationParser.parse("1m30s").get(), .seconds(90))
        XCTAssertEqual(try DurationParser.parse("5m").get(), .seconds(300))
        XCTAssertEqual(try DurationParser.parse("1.5s").get(), .milliseconds(1500))
        XCTAssertThrowsError(try DurationParser.parse("s").get())
        XCTAssertEqual(DurationParser.format(.milliseconds(1500)), "1500ms")
    }

    func testCollectErrorsAndSinkChecks() {
        let e = errors("""
        agent:
          interval: nope
        pipeline:
          sinks:
            - type: jsonl
              pth: x
            - type: kafka
        """)
        XCTAssertEqual(e.count, 4, "\(e)")
        XCTAssertTrue(e.contains("config.yaml:5:7: sink 'jsonl' needs 'path'"), "\(e)")
        XCTAssertTrue(e.contains("config.yaml:6:7: unknown key 'pth' in sink 'jsonl' (did you mean 'path'?)"), "\(e)")
        XCTAssertTrue(e.contains { $0.hasPrefix("config.yaml:7:13: unknown sink type 'kafka'") }, "\(e)")
    }

    func testGroupTemplate() throws {
        let e = errors("rules:\n  - name: r\n    group: \"{exe.nam}\"\n")
        XCTAssertEqual(e.count, 1)
        XCTAssertTrue(e[0].contains("unknown placeholder '{exe.nam}'") && e[0].contains("did you mean 'exe.name'"), e[0])
    }

    func testPluginConfigToJSONAndPointerMapping() throws {
        let c = try parse("""
        rules:
          - name: r
            collectors:
              fdcount:
                warn_above: 10
                name: "quoted"
                list: [1, 2.5, true, null, x]
        """)
        let col = c.rules[0].collectors[0]
        XCTAssertEqual(col.json, "{\"warn_above\":10,\"name\":\"quoted\",\"list\":[1,2.5,true,null,\"x\"]}")
        XCTAssertEqual(col.node.keyMark(atJSONPointer: "/warn_above")?.description, "config.yaml:5:9")
        XCTAssertEqual(col.node.keyMark(atJSONPointer: "/list/1")?.description, "config.yaml:7:19")
    }

    func testDuplicateKeysAndRules() {
        let e = errors("agent:\n  interval: 1s\n  interval: 2s\n")
        XCTAssertEqual(e, ["config.yaml:3:3: duplicate key 'interval' (first at line 2)"])
    }
}
