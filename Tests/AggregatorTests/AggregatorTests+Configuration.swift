@testable import FerretAggregators
@testable import FerretComponents
@testable import FerretCore
import Foundation
import XCTest

/// The aggregators' configuration: decoding and errors.
extension AggregatorTests {
    // MARK: - configuration

    func config(_ aggregators: String) -> [String] {
        let yaml = "pipeline:\n  aggregators:\n" + aggregators
        do {
            _ = try AgentConfig.parse(text: yaml, file: "config.yaml", knownPlugins: { _ in [] }, components: FerretComponents.all)
            return []
        } catch let e as ConfigErrors {
            return e.errors.map(\.description)
        } catch {
            return ["\(error)"]
        }
    }

    func testConfigurationDecodesEveryType() throws {
        let yaml = """
        pipeline:
          aggregators:
            - type: rate
              metrics: [process.cpu.time]
            - type: window
              every: 10s
              metrics: ["http.*"]
              where: { ferret.group: web }
              percentiles: [p50, p99, p999]
              keep_raw: true
            - type: group
              metrics: [go.goroutine.count]
              functions: [sum, max]
            - type: goroutine_leak
              window: 30s
              min_slope: 0.5
            - type: threshold
              rules:
                - "go.gc.cpu.fraction > 0.25 for 30s"
                - { metric: go.goroutine.count, op: ">=", value: 10000, for: 1m, severity: error, name: too-many }
            - type: anomaly
              metrics: ["go.gc.*"]
              z: 5
        """
        let c = try AgentConfig.parse(text: yaml, file: "config.yaml", knownPlugins: { _ in [] }, components: FerretComponents.all)
        var errors: [ConfigError] = []
        let chain = FerretComponents.all.makeAggregators(c.pipeline.aggregators, logger: .init(label: "t"), errors: &errors)
        XCTAssertEqual(errors, [])
        XCTAssertEqual(chain.map(\.type), ["rate", "window", "group", "goroutine_leak", "threshold", "anomaly"])
        let w = chain[1].aggregator as! WindowAggregator
        XCTAssertEqual(w.options.percentiles.map(\.value), [50, 99, 99.9])
        XCTAssertTrue(w.options.keepRaw)
        let t = chain[4].aggregator as! ThresholdAggregator
        XCTAssertEqual(t.rules.map(\.name), ["go.gc.cpu.fraction > 0.25 for 30s", "too-many"])
        XCTAssertEqual(t.rules[1].severity, .error)
        XCTAssertEqual(t.rules[1].holdFor, 60_000_000_000)
        XCTAssertEqual((chain[3].aggregator as! GoroutineLeakDetector).options.minSlope, 0.5)
    }

    func testConfigurationErrorsNameTheirPlace() {
        let e = config("""
            - type: window
              percentiles: [p50, p0, median]
              stats: [min, avg]
              significant_digits: 9
            - type: threshold
              rules: ["go.gc.cpu.fraction >> 0.25", { metric: x, op: "~", value: 1 }, "y > 1 for 5 parsecs"]
            - type: goroutine_leak
              min_trend: 2
              window: 1s
            - type: group
              by: [process.pid]
              functions: [sum, median]
            - type: anomaly
              alpha: lots
              where: { ferret.group: }
        """)
        let expected = [
            "config.yaml:4:20: unknown percentile 'p0' in aggregator 'window'",
            "config.yaml:4:20: unknown percentile 'median' in aggregator 'window'",
            "config.yaml:5:14: unknown value 'avg' in 'stats' in aggregator 'window'",
            "config.yaml:6:27: 'significant_digits' must be between 1 and 5 in aggregator 'window', got 9",
            "config.yaml:8:15: invalid rule 'go.gc.cpu.fraction >> 0.25' in rule #1 of aggregator 'threshold': unknown comparison '>>'",
            "config.yaml:8:62: unknown comparison '~' in rule #2 of aggregator 'threshold'",
            "config.yaml:8:79: invalid rule 'y > 1 for 5 parsecs' in rule #3 of aggregator 'threshold'",
            "config.yaml:10:18: 'min_trend' must be between 0 and 1 in aggregator 'goroutine_leak', got 2",
            "config.yaml:11:15: 'window' must be at least 5s in aggregator 'goroutine_leak', got '1s'",
            "config.yaml:13:11: grouping by 'process.pid' in aggregator 'group' gives one group per process",
            "config.yaml:14:18: unknown value 'median' in 'functions' in aggregator 'group'",
            "config.yaml:16:14: expected a number for 'alpha' in aggregator 'anomaly', got 'lots'",
            "config.yaml:17:30: 'where.ferret.group' in aggregator 'anomaly' needs a value",
        ]
        for x in expected {
            XCTAssertTrue(e.contains { $0.hasPrefix(x) }, "missing: \(x)\nin:\n\(e.joined(separator: "\n"))")
        }
        XCTAssertEqual(e.count, expected.count, e.joined(separator: "\n"))
        XCTAssertTrue(config("    - type: threshold\n").contains("config.yaml:3:7: aggregator 'threshold' needs 'rules'"))
        XCTAssertTrue(config("    - type: window\n      evry: 10s\n").contains { $0.hasPrefix("config.yaml:4:7: unknown key 'evry' in aggregator 'window' (did you mean 'every'?)") })
    }
}
