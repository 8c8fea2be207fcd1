// Locating the runtime globals of stripped Go binaries from code (issue #8):
// per binary, cold (a fresh GoBinary each run, the file in the page cache):
// ELF + build info + pclntab + decoding the source functions with capstone +
// consensus, then, with a pid, validating the result against the live process.
// Side by side: tools/globalsgen/globals_extract.py resolve, the objdump-based
// research script that does the same job (one objdump run per function).
// Usage: GlobalsLocateBench BINARY[:PID] ...
import Foundation
import GoIntrospection

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
let names = RuntimeGlobalsLocator.names + RuntimeGlobalsLocator.optionalNames
let runs = 9

for arg in CommandLine.arguments.dropFirst() {
    let parts = arg.split(separator: ":", maxSplits: 1).map(String.init)
    let path = parts[0], pid = parts.count > 1 ? Int32(parts[1]) : nil
    let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    var parse: [Double] = [], locate: [Double] = []
    var found = 0, version = "?"
    var globals: [RuntimeGlobal] = []
    for _ in 0..<runs {
        let t0 = now()
        let b = try GoBinary(path: path)
        _ = try b.pclnTable()
        let t1 = now()
        globals = RuntimeGlobalsLocator(strategies: [CodeReferenceStrategy()]).locate(in: b, names: names)
        let t2 = now()
        parse.append(t1 - t0)
        locate.append(t2 - t1)
        found = globals.filter { $0.address != nil }.count
        version = b.goVersion ?? "?"
    }
    parse.sort()
    locate.sort()
    let total = zip(parse, locate).map { $0 + $1 }.sorted()
    print(String(format: "locate: %@ (%.1f MB, %@, stripped): %d of %d globals; median %.1f ms in all (%.1f ms ELF + pclntab, %.1f ms decoding + consensus), min %.1f ms over %d runs",
                 (path as NSString).lastPathComponent, Double(size) / 1e6, version, found, names.count,
                 total[runs / 2] * 1e3, parse[runs / 2] * 1e3, locate[runs / 2] * 1e3, total[0] * 1e3, runs))
    for g in globals where g.address == nil && RuntimeGlobalsLocator.names.contains(g.name) {
        print("  \(g.name): \(g.problem ?? "")")
    }
    if let pid {
        let b = try GoBinary(path: path)
        let bias = try ProcessMaps.loadBias(pid: pid, elf: b.elf)
        var times: [Double] = []
        var v: GlobalsValidation?
        for _ in 0..<runs {
            let t0 = now()
            v = RuntimeGlobalsValidator.validate(pid: pid, binary: b, globals: globals, bias: bias, attempts: 1)
            times.append(now() - t0)
        }
        times.sort()
        print(String(format: "validate: pid %d, %d checks, %@: median %.2f ms, min %.2f ms over %d runs",
                     pid, v?.checks.count ?? 0, v?.passed == true ? "all passed" : "FAILED: \(v?.failure ?? "")",
                     times[runs / 2] * 1e3, times[0] * 1e3, runs))
    }
}
