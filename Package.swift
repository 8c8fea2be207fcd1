// swift-tools-version:6.0
import PackageDescription

/// The sinks: each folder under Sources/Sinks named here is a target named
/// Sink<Folder> (its code, README.md and sample.yaml), so adding a sink is
/// the folder, its name here and its line in Sources/Components/All.swift
/// (docs/adding-a-sink.md). The list is written out, not read from the disk:
/// SwiftPM caches an evaluated manifest by its text, so a new folder would go
/// unseen. Every sink depends on the kernel; those that need more say so below.
let sinkFolders = ["Console", "Dashboard", "InfluxDB", "JSONL", "OTLP", "PprofDir", "Prometheus", "StatsD", "Webhook"]
let sinkExtraDependencies: [String: [Target.Dependency]] = [
    "PprofDir": ["Pprof"],
    "Prometheus": ["FerretHTTPServer"],
    "Dashboard": ["FerretHTTPServer", "Pprof"],
    "InfluxDB": ["FerretDelivery"],
    "OTLP": ["FerretDelivery", "OTLP"],
    "Webhook": ["FerretDelivery"],
]
/// Go introspection and the Linux process layer (the shared library).
let ferretGo: Target.Dependency = .product(name: "FerretGo", package: "FerretGo")
let sinkTargets = sinkFolders.map { "Sink\($0)" }
/// The aggregator folders (Sources/Aggregators/<Name>).
let aggregators = ["Window", "Rate", "Group", "GoroutineLeak", "Threshold", "Anomaly"]
/// A component folder's documents, which are not sources.
let docs = ["README.md", "sample.yaml"]
func componentDocs(_ folders: [String], under prefix: String) -> [String] {
    folders.flatMap { f in docs.map { "\(prefix)\(f)/\($0)" } }
}

let sinkTargetList: [Target] = sinkFolders.map { folder in
    .target(
        name: "Sink\(folder)", dependencies: ["FerretCore"] + (sinkExtraDependencies[folder] ?? []),
        path: "Sources/Sinks/\(folder)", exclude: docs,
        // The dashboard's pages, served by the agent itself (no CDN).
        resources: folder == "Dashboard"
            ? [.embedInCode("web/index.html"), .embedInCode("web/app.js"), .embedInCode("web/app.css")] : nil)
}

let package = Package(
    name: "ferret",
    products: [
        // The agent.
        .executable(name: "ferret", targets: ["Host"]),
        // The plugin contract: a header-only C target third parties build against alone.
        .library(name: "FerretPluginABI", targets: ["FerretPluginABI"]),
        // Swift conveniences for plugin authors.
        .library(name: "FerretPluginKit", targets: ["FerretPluginKit"]),
        // Collector plugins: loadable shared objects, built next to `ferret`.
        .library(name: "ferret_procio", type: .dynamic, targets: ["ProcIOPlugin"]),
        .library(name: "ferret_scheduler", type: .dynamic, targets: ["SchedulerPlugin"]),
        .library(name: "ferret_goroutines", type: .dynamic, targets: ["GoroutinesPlugin"]),
        .library(name: "ferret_heap", type: .dynamic, targets: ["HeapPlugin"]),
        .library(name: "ferret_cpu_profiler", type: .dynamic, targets: ["CPUProfilerPlugin"]),
        .library(name: "ferret_http_tracer", type: .dynamic, targets: ["HTTPTracerPlugin"]),
    ],
    dependencies: [
        // Go introspection and the Linux process layer as one shared library
        // (libFerretGo.so): one copy and one parse per binary in the agent,
        // however many plugins read it (Packages/FerretGo/Package.swift).
        .package(path: "Packages/FerretGo"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // The agent's own metrics: components report through swift-metrics.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        // Sinks: the Prometheus (and later dashboard) HTTP server, the HTTP client
        // of the network sinks' delivery core, and the window aggregator's percentiles.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        // Hummingbird's own lifecycle: the prometheus sink shuts its server down gracefully.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        .target(name: "FerretPluginABI", path: "Sources/FerretPluginABI"),
        .systemLibrary(
            name: "CYAML", path: "Sources/CYAML", pkgConfig: "yaml-0.1",
            providers: [.apt(["libyaml-dev"])]),
        .target(name: "CLinuxSupport", path: "Sources/CLinuxSupport"),
        // What the agent and its plugin helpers share: the record ring, the
        // control protocol, the crash report (issue #18).
        .target(name: "CPluginIsolation", path: "Sources/CPluginIsolation"),
        // ferret-plugin-host (Sources/PluginHost, C) is built by scripts/build.sh
        // with cc, not here: SwiftPM links every executable with the Swift
        // runtime, 2 MiB of RSS in a helper that runs no Swift code.
        // The CPU profiler's sampling engine (issue #5): perf CPU-clock samples with
        // callchains from every thread of a process, rings drained by its own thread.
        .target(name: "PerfSampling", dependencies: ["CLinuxSupport", ferretGo], path: "Sources/PerfSampling"),
        .systemLibrary(
            name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        // pprof profiles (profile.proto, generated code committed: scripts/gen-protos.sh).
        .target(
            name: "Pprof",
            dependencies: ["CZlib", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            path: "Sources/Pprof", exclude: ["proto"]),
        // OpenTelemetry's OTLP messages (generated code committed: scripts/gen-protos.sh).
        .target(
            name: "OTLP",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            path: "Sources/OTLP", exclude: ["proto"]),
        .target(
            name: "FerretPluginKit", dependencies: ["FerretPluginABI"],
            path: "Sources/FerretPluginKit"),
        // The kernel: signals and their JSON form, config decoding, rules,
        // discovery, the plugin host, the pipeline and the component protocols.
        // No sink or aggregator lives here, and no HTTP or protobuf dependency.
        .target(
            name: "FerretCore",
            dependencies: [
                "FerretPluginABI", "CYAML", "CLinuxSupport", "CPluginIsolation", ferretGo,
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            path: "Sources/FerretCore"),
        // The HTTP server the prometheus and dashboard sinks share (Hummingbird).
        .target(
            name: "FerretHTTPServer",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Sources/HTTPServer"),
        // The delivery core of the network sinks (byte budget, batching, backoff).
        .target(
            name: "FerretDelivery",
            dependencies: [
                "FerretCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Sources/Delivery", exclude: docs),
        // Aggregators: a folder each (code, README.md, sample.yaml), helpers in Shared/.
        .target(
            name: "FerretAggregators",
            dependencies: ["FerretCore", .product(name: "Histogram", package: "hdrhistogram-swift")],
            path: "Sources/Aggregators", exclude: componentDocs(aggregators, under: "")),
        // Sinks: one target and one folder each (see sinkFolders above).
        ]
        + sinkTargetList + [
        // The registry: every component the agent is built with, by config name.
        .target(
            name: "FerretComponents",
            dependencies: ["FerretCore", "FerretAggregators"] + sinkTargets.map { .target(name: $0) },
            path: "Sources/Components"),
        .executableTarget(
            name: "Host",
            dependencies: [
                "FerretCore", "FerretComponents", ferretGo, "Pprof", "GoroutineProfiling",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                // `ferret status` reads the dashboard's API with the network sinks' client.
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                // `ferret run`: the agent is a Service in a ServiceGroup that owns the signals.
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Host"),
        .target(
            name: "ProcIOPlugin", dependencies: ["FerretPluginKit", ferretGo],
            path: "Sources/Plugins/ProcIO", exclude: ["README.md", "sample.yaml"]),
        .target(
            name: "SchedulerPlugin", dependencies: ["FerretPluginKit", ferretGo, "CLinuxSupport"],
            path: "Sources/Plugins/Scheduler", exclude: ["README.md", "sample.yaml"]),
        .target(
            name: "GoroutinesPlugin", dependencies: ["FerretPluginKit", ferretGo, "GoroutineProfiling"],
            path: "Sources/Plugins/Goroutines", exclude: ["README.md", "sample.yaml"]),
        // CPU profiling shared by the cpu_profiler plugin and tests: samples to pprof.
        .target(name: "CPUProfiling", dependencies: [ferretGo, "Pprof"]),
        // The goroutine census as Go's goroutine profile (pprof), for the goroutines plugin and `ferret goroutines`.
        .target(name: "GoroutineProfiling", dependencies: [ferretGo, "Pprof", "CPUProfiling"]),
        .target(
            name: "CPUProfilerPlugin", dependencies: ["FerretPluginKit", ferretGo, "PerfSampling", "CPUProfiling"],
            path: "Sources/Plugins/CPUProfiler", exclude: ["README.md", "sample.yaml"]),
        .target(
            name: "HeapPlugin", dependencies: ["FerretPluginKit", ferretGo],
            path: "Sources/Plugins/Heap", exclude: ["README.md", "sample.yaml"]),
        // libbpf for the http_tracer (issue #6).
        .systemLibrary(
            name: "CBPF", path: "Sources/CBPF", pkgConfig: "libbpf",
            providers: [.apt(["libbpf-dev"])]),
        // The http_tracer's engine: RET finding, probe planning, the libbpf loader
        // and event decoding (a library so tests drive it without the host).
        .target(
            name: "HTTPTracing", dependencies: [ferretGo, "CBPF"],
            path: "Sources/HTTPTracing"),
        // The BPF C under bpf/ is compiled by scripts/build.sh, not SwiftPM.
        .target(
            name: "HTTPTracerPlugin", dependencies: ["FerretPluginKit", "HTTPTracing", ferretGo],
            path: "Sources/Plugins/HTTPTracer", exclude: ["README.md", "sample.yaml", "bpf"]),
        // Benchmarks (bench/run.sh builds them in release mode).
        .executableTarget(
            name: "PipelineBench", dependencies: ["FerretCore", "SinkJSONL", "FerretPluginABI", .product(name: "Logging", package: "swift-log")],
            path: "bench/Sources/PipelineBench"),
        .executableTarget(
            name: "IsolationBench", dependencies: ["FerretCore", .product(name: "Logging", package: "swift-log")],
            path: "bench/Sources/IsolationBench"),
        .executableTarget(
            name: "AggregatorBench", dependencies: ["FerretCore", "FerretAggregators"],
            path: "bench/Sources/AggregatorBench"),
        .executableTarget(
            name: "IntrospectionBench", dependencies: [ferretGo],
            path: "bench/Sources/IntrospectionBench"),
        .executableTarget(
            name: "CensusBench", dependencies: [ferretGo],
            path: "bench/Sources/CensusBench"),
        .executableTarget(
            name: "PrometheusBench", dependencies: ["FerretCore", "SinkPrometheus", .product(name: "Logging", package: "swift-log")],
            path: "bench/Sources/PrometheusBench"),
        .executableTarget(
            name: "GoReaderBench", dependencies: [ferretGo],
            path: "bench/Sources/GoReaderBench"),
        .executableTarget(
            name: "GlobalsLocateBench", dependencies: [ferretGo],
            path: "bench/Sources/GlobalsLocateBench"),
        .executableTarget(
            name: "HistoryBench", dependencies: ["FerretCore", "SinkDashboard"],
            path: "bench/Sources/HistoryBench"),
        // Test support shared by the test targets: Go toolchains and cached fixture
        // builds, the truthsrv fixture's client.
        .target(name: "GoTestSupport", dependencies: [ferretGo], path: "Tests/GoTestSupport"),
        // Helpers of the agent-level tests: the agent as a process (AgentProcess),
        // C fixture plugins, an HTTP client, the OTLP receiver.
        .target(name: "FerretTestSupport", dependencies: ["FerretCore", "FerretDelivery", "GoTestSupport"], path: "Tests/FerretTestSupport"),
        // The kernel and the agent end to end (through the `ferret` executable).
        .testTarget(
            name: "FerretCoreTests",
            dependencies: ["FerretCore", "FerretComponents", "FerretAggregators",
                           "FerretPluginKit", "FerretTestSupport", "GoTestSupport", "SchedulerPlugin", "Pprof"]
                + sinkTargets.map { .target(name: $0) },
            path: "Tests/FerretCoreTests",
            exclude: ["Fixtures"]),
        // The sinks, the delivery core and the HTTP server, a test file or more per sink.
        .testTarget(
            name: "SinkTests",
            dependencies: ["FerretCore", "FerretDelivery", "FerretHTTPServer", "FerretTestSupport", "GoTestSupport", "Pprof"]
                + sinkTargets.map { .target(name: $0) },
            path: "Tests/SinkTests"),
        .testTarget(
            name: "AggregatorTests",
            dependencies: ["FerretCore", "FerretAggregators", "FerretComponents", "GoTestSupport", .product(name: "Histogram", package: "hdrhistogram-swift")],
            path: "Tests/AggregatorTests"),
        .testTarget(
            name: "GoIntrospectionTests", dependencies: [ferretGo, "GoTestSupport", "GoroutineProfiling"],
            path: "Tests/GoIntrospectionTests", exclude: ["Fixtures"]),
        .testTarget(
            name: "PprofTests", dependencies: ["Pprof", "GoTestSupport"],
            path: "Tests/PprofTests"),
        .testTarget(
            name: "PerfSamplingTests", dependencies: ["PerfSampling", "CLinuxSupport", "GoTestSupport"],
            path: "Tests/PerfSamplingTests"),
        .testTarget(
            name: "HTTPTracingTests", dependencies: ["HTTPTracing", ferretGo, "GoTestSupport"],
            path: "Tests/HTTPTracingTests", exclude: ["Fixtures"]),
        .testTarget(
            name: "LinuxProcessTests", dependencies: [ferretGo],
            path: "Tests/LinuxProcessTests", exclude: ["Fixtures"]),
        .testTarget(
            name: "FerretPluginKitTests", dependencies: ["FerretPluginKit"],
            path: "Tests/FerretPluginKitTests"),
    ]
)
