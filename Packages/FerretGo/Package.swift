// swift-tools-version:6.0
import PackageDescription

/// Go introspection and the Linux process layer, built once as one shared
/// library (libFerretGo.so) that the `ferret` executable and every shipped
/// plugin link against. In the agent process there is then one copy of the
/// code and one set of caches: a binary is parsed once (pclntab, symbols,
/// DWARF layouts, located runtime globals) however many plugins read it
/// (issue #17, "one parse per binary"). It is its own package because SwiftPM
/// links a library dynamically only when it comes from another package; a
/// target of the root package would be copied into every plugin.
let package = Package(
    name: "FerretGo",
    products: [
        .library(name: "FerretGo", type: .dynamic, targets: ["GoIntrospection", "GoBinaryFormat", "ELFSymbols", "LinuxProcess"]),
    ],
    targets: [
        // Linux processes as the host sees them: the procfs root (host_proc), PID
        // namespaces (NSpid), cgroups and the container and pod identity behind them.
        .target(name: "LinuxProcess", path: "Sources/LinuxProcess"),
        // elfutils: libelf and libdw in one module (see its module map).
        .systemLibrary(
            name: "CElf", path: "Sources/CElf", pkgConfig: "libdw",
            providers: [.apt(["libelf-dev", "libdw-dev"])]),
        // capstone's header only: the library is opened with dlopen when an
        // instruction has to be decoded, and closed after (X86Decoder), so an
        // agent that never decodes does not carry its relocated tables.
        .systemLibrary(name: "CCapstone", path: "Sources/CCapstone", providers: [.apt(["libcapstone-dev"])]),
        // ELF files and their symbols (libelf), x86-64 decoding (capstone), and
        // the bounds-checked little-endian byte readers everything above uses.
        .target(name: "ELFSymbols", dependencies: ["CElf", "CCapstone"], path: "Sources/ELFSymbols"),
        // The Go binary: build info, pclntab, DWARF layouts (libdw), the
        // per-version layout and code-reference tables, the runtime-globals
        // locator; what can be known from the file alone.
        .target(
            name: "GoBinaryFormat", dependencies: ["ELFSymbols", "LinuxProcess", "CElf"], path: "Sources/GoBinaryFormat",
            resources: [.embedInCode("Layouts/layouts.json"), .embedInCode("Layouts/globalrefs.json"),
                        .embedInCode("Layouts/goroutines.json")]),
        // The running process: /proc facts, maps, process memory, the symbolizer
        // and the Go runtime readers (scheduler, heap, globals validation).
        // Importing it imports the layers below.
        .target(
            name: "GoIntrospection", dependencies: ["LinuxProcess", "ELFSymbols", "GoBinaryFormat"],
            path: "Sources/GoIntrospection"),
    ]
)
