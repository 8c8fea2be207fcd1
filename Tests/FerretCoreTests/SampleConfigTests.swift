import Foundation
import XCTest

/// Every plugin's commented sample.yaml, and the default config.yaml, pass
/// `ferret validate` as they are.
final class SampleConfigTests: XCTestCase {
    func testSamplesAndDefaultConfigValidate() throws {
        let plugins = TestSupport.repoRoot + "/Sources/Plugins"
        let samples = try FileManager.default.contentsOfDirectory(atPath: plugins).sorted()
            .map { "\(plugins)/\($0)/sample.yaml" }.filter { FileManager.default.fileExists(atPath: $0) }
        XCTAssertGreaterThanOrEqual(samples.count, 4)
        for f in samples + [TestSupport.repoRoot + "/config.yaml"] {
            let r = try TestSupport.run(TestSupport.ferret, ["validate", "--config", f])
            XCTAssertEqual(r.status, 0, "\(f): \(r.stderr)")
        }
    }
}
