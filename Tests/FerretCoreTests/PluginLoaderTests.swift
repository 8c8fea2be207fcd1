@testable import FerretCore
import FerretTestSupport
import FerretPluginABI
import Foundation
import GoTestSupport
import Logging
import XCTest

/// Each broken plugin fails with a message naming the file and the reason,
/// and the good plugins beside it still load.
final class PluginLoaderTests: XCTestCase {
    let logger = Logger(label: "test")

    func loadDir(_ setup: (String) throws -> Void) throws -> [PluginRecord] {
        let dir = TestSupport.tempDir("plugins.d")
        try setup(dir)
        return PluginRegistry(logger: logger).load(paths: [dir])
    }

    func testGoodAndBadPluginsSideBySide() throws {
        let good = try TestSupport.examplePlugin()
        let wrong = try TestSupport.fixture("wrong_abi")
        let noEntry = try TestSupport.fixture("no_entry")
        let records = try loadDir { dir in
            TestSupport.manifest(in: dir, name: "fdcount", library: good)
            TestSupport.manifest(in: dir, name: "wrong_abi", library: wrong)
            TestSupport.manifest(in: dir, name: "no_entry", library: noEntry)
            // Not an ELF file at all: dlopen fails.
            try "not a library".write(toFile: dir + "/libbroken.so", atomically: true, encoding: .utf8)
            TestSupport.manifest(in: dir, name: "broken", library: "libbroken.so")
        }
        let byName = Dictionary(uniqueKeysWithValues: records.map { ($0.name, $0) })
        XCTAssertNotNil(byName["fdcount"]?.plugin, "the good plugin loads: \(byName["fdcount"]?.error ?? "")")
        XCTAssertEqual(byName["fdcount"]?.plugin?.version, "1.0.0")

        let w = try XCTUnwrap(byName["wrong_abi"]?.error)
        XCTAssertTrue(w.hasPrefix(wrong + ": plugin ABI 99.1 is incompatible with host ABI 1.1"), w)

        let n = try XCTUnwrap(byName["no_entry"]?.error)
        XCTAssertTrue(n.hasPrefix(noEntry + ": no entry symbol 'ferret_plugin_entry'"), n)

        let b = try XCTUnwrap(byName["broken"]?.error)
        XCTAssertTrue(b.contains("libbroken.so: cannot load library: "), b)
        XCTAssertTrue(b.contains("invalid ELF header") || b.contains("file too short"), "carries the dlerror text: \(b)")
    }

    func testMissingLibraryNamesTheManifest() throws {
        let records = try loadDir { dir in TestSupport.manifest(in: dir, name: "ghost", library: "libghost.so") }
        let e = try XCTUnwrap(records.first?.error)
        XCTAssertTrue(e.contains("ghost.yaml: library 'libghost.so' not found next to the manifest, on FERRET_PLUGIN_PATH"), e)
    }

    func testTwoManifestsForOneNameAreReported() throws {
        let lib = try TestSupport.fixture("counter")
        let records = try loadDir { dir in
            TestSupport.manifest(in: dir, name: "counter", library: lib)
            try "name: counter\nlibrary: \(lib)\nkind: collector\n".write(toFile: dir + "/zz-counter-again.yaml", atomically: true, encoding: .utf8)
        }
        XCTAssertEqual(records.count, 2)
        XCTAssertNotNil(records[0].plugin, records[0].error ?? "")
        let e = try XCTUnwrap(records[1].error)
        XCTAssertTrue(e.hasSuffix("zz-counter-again.yaml: plugin 'counter' is already provided by \(records[0].manifestPath)"), e)
    }

    func testWorldWritablePluginsDirIsRefused() throws {
        let good = try TestSupport.examplePlugin()
        let dir = TestSupport.tempDir("plugins.d")
        TestSupport.manifest(in: dir, name: "fdcount", library: good)
        chmod(dir, 0o777)
        let records = PluginRegistry(logger: logger).load(paths: [dir])
        XCTAssertEqual(records.count, 1)
        let e = try XCTUnwrap(records[0].error)
        XCTAssertTrue(e.contains("plugins folder '\(dir)' is world-writable (mode 777); refusing it"), e)
        XCTAssertNil(records[0].plugin)
    }

    func testLibraryOwnedByAnotherUserIsRefused() throws {
        try XCTSkipIf(geteuid() != 0, "needs root to chown a file to another user; CI runs as root")
        let src = try TestSupport.fixture("counter")
        let dir = TestSupport.tempDir("plugins.d")
        let lib = dir + "/libcounter_other.so"
        try FileManager.default.copyItem(atPath: src, toPath: lib)
        XCTAssertEqual(chown(lib, 65534, 65534), 0)
        TestSupport.manifest(in: dir, name: "counter", library: lib)
        let records = PluginRegistry(logger: logger).load(paths: [dir])
        let e = try XCTUnwrap(records.first?.error)
        XCTAssertTrue(e.contains("plugin library '\(lib)' is owned by uid 65534"), e)
    }

    func testManifestNameMustMatchDescriptor() throws {
        let lib = try TestSupport.fixture("counter")
        let records = try loadDir { dir in TestSupport.manifest(in: dir, name: "not_counter", library: lib) }
        let e = try XCTUnwrap(records.first?.error)
        XCTAssertTrue(e.contains("library reports plugin name 'counter' but the manifest"), e)
    }

    func testLookupOrderFindsLibraryNextToManifestFirst() throws {
        let src = try TestSupport.fixture("counter")
        let dir = TestSupport.tempDir("plugins.d")
        try FileManager.default.copyItem(atPath: src, toPath: dir + "/libcounter_local.so")
        XCTAssertEqual(PluginRegistry.locate("libcounter_local.so", manifestDir: dir), dir + "/libcounter_local.so")
        // Next to the ferret executable (how a plain `swift build` works without install):
        // the test runner lives in the same products folder.
        XCTAssertEqual(PluginRegistry.locate("libferret_procio.so", manifestDir: dir), TestSupport.productsDir + "/libferret_procio.so")
    }

    /// Every plugin Ferret ships, and the C example, pass the conformance run,
    /// validate (ABI 1.1) included.
    func testConformanceOfEveryShippedPlugin() throws {
        let c = Conformance.run(library: try TestSupport.examplePlugin(), logger: logger)
        XCTAssertTrue(c.passed, c.text)
        XCTAssertTrue(c.text.contains("PASS  unknown config key"), c.text)
        XCTAssertTrue(c.text.contains("PASS  validate: accepts {}; refuses the unknown key"), c.text)
        for name in ["procio", "scheduler", "goroutines", "heap", "cpu_profiler", "http_tracer"] {
            // The tracer finds its BPF object next to its library by itself, in
            // this process too (its maps are long: /proc/self/maps is read to the end).
            let json = "{}"
            let r = Conformance.run(library: TestSupport.productsDir + "/libferret_\(name).so", configJSON: json, logger: logger)
            XCTAssertTrue(r.passed, "\(name):\n\(r.text)")
            XCTAssertTrue(r.text.contains("ABI 1.1"), "\(name):\n\(r.text)")
            XCTAssertTrue(r.text.contains("PASS  validate: accepts \(json); refuses the unknown key"), "\(name):\n\(r.text)")
        }
        let procio = Conformance.run(library: TestSupport.productsDir + "/libferret_procio.so", logger: logger)
        XCTAssertTrue(procio.text.contains("metric point(s)"), procio.text)
    }

    /// ABI 1.1 grows the descriptor (validate). A plugin built against the
    /// saved 1.0 header (Fixtures/abi-1.0) declares the 1.0 struct_size: the
    /// host copies what it declares into a zeroed descriptor, so validate reads
    /// as NULL, and the plugin loads, runs and emits as before. The other way,
    /// the 1.1 C example, declares the larger size and its validate is used.
    func testPluginBuiltAgainstTheOneZeroHeaderRunsOnThisHost() throws {
        let old = try TestSupport.compile(source: TestSupport.repoRoot + "/Tests/FerretCoreTests/Fixtures/plugins/counter.c",
                                          output: TestSupport.buildDir + "/libcounter_abi10.so",
                                          headers: TestSupport.repoRoot + "/Tests/FerretCoreTests/Fixtures/abi-1.0")
        guard case .success(let p) = PluginRegistry.loadLibrary(old) else { return XCTFail("the 1.0 plugin loads") }
        XCTAssertEqual(p.abiMinor, 0)
        XCTAssertFalse(p.canValidate, "a 1.0 descriptor has no validate: the bytes past its struct_size are not read")
        let r = Conformance.run(library: old, logger: logger)
        XCTAssertTrue(r.passed, r.text)
        XCTAssertTrue(r.text.contains("ABI 1.0"), r.text)
        XCTAssertTrue(r.text.contains("WARN  validate: no validate function (ABI 1.0)"), r.text)
        XCTAssertTrue(r.text.contains("metric point(s), 2 event(s)"), r.text)
        // The saved header is the 1.0 contract: its descriptor is the frozen size.
        let header = try String(contentsOfFile: TestSupport.repoRoot + "/Tests/FerretCoreTests/Fixtures/abi-1.0/ferret_plugin.h", encoding: .utf8)
        XCTAssertTrue(header.contains("#define FERRET_ABI_MINOR 0"))
        XCTAssertFalse(header.contains("validate"))
        XCTAssertEqual(Int(FERRET_SIZE_1_0_ferret_plugin_descriptor), 120)
        XCTAssertGreaterThan(MemoryLayout<ferret_plugin_descriptor>.size, Int(FERRET_SIZE_1_0_ferret_plugin_descriptor))
        guard case .success(let example) = PluginRegistry.loadLibrary(try TestSupport.examplePlugin()) else { return XCTFail("fdcount loads") }
        XCTAssertEqual(example.abiMinor, 1)
        XCTAssertTrue(example.canValidate)
    }

    /// `ferret validate` asks each plugin to check its own settings (ABI 1.1):
    /// one wrong value per shipped plugin, each reported at its file:line:col,
    /// and a 1.0 plugin is named as one that cannot check before it runs.
    func testValidateRejectsAWrongSettingOfEveryShippedPlugin() throws {
        let dir = TestSupport.tempDir("validate-plugins")
        let manifests = dir + "/plugins.d"
        try FileManager.default.createDirectory(atPath: manifests, withIntermediateDirectories: true)
        var libraries = ["fdcount": try TestSupport.examplePlugin(),
                         "counter": try TestSupport.compile(source: TestSupport.repoRoot + "/Tests/FerretCoreTests/Fixtures/plugins/counter.c",
                                                            output: TestSupport.buildDir + "/libcounter_abi10.so",
                                                            headers: TestSupport.repoRoot + "/Tests/FerretCoreTests/Fixtures/abi-1.0")]
        for name in ["procio", "scheduler", "goroutines", "heap", "cpu_profiler", "http_tracer"] {
            libraries[name] = TestSupport.productsDir + "/libferret_\(name).so"
        }
        for (name, lib) in libraries {
            try "name: \(name)\nlibrary: \(lib)\nkind: collector\n".write(toFile: "\(manifests)/\(name).yaml", atomically: true, encoding: .utf8)
        }
        let config = dir + "/config.yaml"
        let lines = [
            "plugins: { paths: [plugins.d] }",                  // 1
            "rules:",                                           // 2
            "  - name: go",                                     // 3
            "    match: { runtime: go }",                       // 4
            "    collectors:",                                  // 5
            "      scheduler:",                                 // 6
            "        syscalls: \"yes\"",                        // 7
            "      heap:",                                      // 8
            "        pss_every: 0",                             // 9
            "      cpu_profiler:",                              // 10
            "        window: 10 minutes",                       // 11
            "      http_tracer:",                               // 12
            "        goroutine_parents: sometimes",             // 13
            "      procio:",                                    // 14
            "        include_char: true",                       // 15
            "      fdcount:",                                   // 16
            "        warn_above: -3",                           // 17
            "      counter:",                                   // 18
            "        sleep_ms: 0",                              // 19
        ]
        try (lines.joined(separator: "\n") + "\n").write(toFile: config, atomically: true, encoding: .utf8)
        let r = try TestSupport.run(TestSupport.ferret, ["validate", "--config", config])
        XCTAssertEqual(r.status, 1, r.stdout + r.stderr)
        let expected = [
            ("7:9", "plugin 'scheduler'", "'syscalls' must be true or false"),
            ("9:9", "plugin 'heap'", "pss_every must be at least 1"),
            ("11:9", "plugin 'cpu_profiler'", "not a duration"),
            ("13:9", "plugin 'http_tracer'", "goroutine_parents must be auto, newproc1 or off"),
            ("15:9", "plugin 'procio'", "unknown key 'include_char'"),
            ("17:9", "plugin 'fdcount'", "warn_above must be a non-negative integer"),
        ]
        for (at, who, what) in expected {
            let line = r.stderr.split(separator: "\n").first { $0.contains("\(config):\(at): \(who)") }
            XCTAssertNotNil(line, "\(who) at \(at):\n\(r.stderr)")
            XCTAssertTrue(line?.contains(what) == true, "\(who): \(line ?? "")")
        }
        // Fixed, the same file is valid, and the 1.0 plugin is named as unchecked.
        var fixed = lines
        for (i, good) in [(6, "syscalls: true"), (8, "pss_every: 5"), (10, "window: 10s"), (12, "goroutine_parents: auto"),
                          (14, "include_chars: true"), (16, "warn_above: 3")] {
            fixed[i] = "        " + good
        }
        try (fixed.joined(separator: "\n") + "\n").write(toFile: config, atomically: true, encoding: .utf8)
        let ok = try TestSupport.run(TestSupport.ferret, ["validate", "--config", config])
        XCTAssertEqual(ok.status, 0, ok.stdout + ok.stderr)
        XCTAssertTrue(ok.stderr.contains("note: plugin 'counter' has no validate function (ABI 1.0)"), ok.stderr)
    }

    func testConformanceFailsABrokenPlugin() throws {
        let c = Conformance.run(library: try TestSupport.fixture("wrong_abi"), logger: logger)
        XCTAssertFalse(c.passed)
        let failing = Conformance.run(library: try TestSupport.fixture("create_fails"), logger: logger)
        XCTAssertFalse(failing.passed, failing.text)
        XCTAssertTrue(failing.text.contains("FAIL  create: status 2: create_fails: refusing on purpose"), failing.text)
    }

    /// A detach that arrives while the attach of the same pid is still queued or
    /// running (a process that exits, or execs again, within the attach) goes
    /// behind it: the plugin is told, and a new attach of the pid is not refused
    /// as a duplicate. Found in CI: the tracer said "pid N is already traced".
    func testDetachDuringAttachIsQueuedBehindIt() throws {
        guard case .success(let plugin) = PluginRegistry.loadLibrary(try TestSupport.fixture("counter")) else {
            return XCTFail("the counter fixture loads")
        }
        // In the agent, and in a helper process: the same order either way.
        try detachDuringAttach(plugin, .inProcess(plugin.descriptor!))
        try detachDuringAttach(plugin, .process(HelperLaunch(library: plugin.libraryPath, instanceName: "r/counter", user: nil,
                                                              capabilities: [], memoryLimit: nil), RestartPolicy()))
    }

    func detachDuringAttach(_ plugin: LoadedPlugin, _ plan: IsolationPlan) throws {
        let sink = MemorySink()
        let runner = SinkRunner(name: "memory", type: "memory", identity: "", sink: sink, buffer: 1 << 16, logger: logger)
        let pipeline = Pipeline(queueSize: 1 << 16, sinks: [runner], logger: logger)
        pipeline.start()
        defer { pipeline.shutdown(timeout: 2) }
        let root = YAMLNode(.mapping([]), mark: SourceMark(file: "<test>", line: 1, column: 1))
        let config = CollectorConfig(plugin: plugin.name, mark: root.mark, json: "{\"attach_sleep_ms\":300}", node: root,
                                     interval: .seconds(60), timeout: .seconds(5))
        let inst = PluginInstance(plugin: plugin, rule: "r", config: config, isolation: plan, pipeline: pipeline, fallback: Resource([]), logger: logger)
        XCTAssertTrue(inst.create().ok)
        defer { inst.shutdown() }
        let me = ProcFS().facts(pid: getpid())!
        var other = me
        other.pid = getppid()
        let done = DispatchGroup()
        func attach(_ f: ProcessFacts) {
            done.enter()
            inst.attach(f, group: "g", resource: Resource.forProcess(f, group: "g", rule: "r", host: "localhost")) { r in
                XCTAssertTrue(r.ok, r.message)
                done.leave()
            }
        }
        // Attach, detach at once, attach again (the exec case); and attach then
        // detach at once (the exit case).
        attach(me)
        inst.detach(pid: me.pid)
        attach(me)
        attach(other)
        inst.detach(pid: other.pid)
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success)
        // The detach of `other` is queued after its attach; wait for it to run.
        var events: [(String, Int64?)] = []
        Wait.until("5 events", timeout: 5) {
            events = sink.signals.compactMap { if case .event(let e) = $0 { return (e.name, e.resource.pid) } else { return nil } }
            return events.count >= 5
        }
        let mine = events.filter { $0.1 == Int64(me.pid) }.map(\.0), others = events.filter { $0.1 == Int64(other.pid) }.map(\.0)
        XCTAssertEqual(mine, ["counter.attached", "counter.detached", "counter.attached"], "\(events)")
        XCTAssertEqual(others, ["counter.attached", "counter.detached"], "\(events)")
        XCTAssertEqual(inst.attachedPids, [me.pid], "only the pid attached last stays attached")
    }
}
