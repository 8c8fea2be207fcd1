// Introspection benchmarks (issue #3):
// 1. cold parse of a large Go binary: ELF + build info + pclntab (+ inline-tree area),
// 2. 100k address symbolizations (with inlined frames), side by side with
//    `go tool addr2line` on the same addresses,
// 3. one batched read of 64 scattered words from a live process,
// 4. DWARF layouts (a binary with DWARF, $FERRET_DWARF_BINARY or BINARY): open,
//    index and first layout; cached lookups; a lookup after the handle was
//    released (what DWARFLayoutTests.testSpeed asserted in wall-clock time).
// Usage: IntrospectionBench BINARY GO_TOOL [PID]
import Foundation
import GoIntrospection

let args = CommandLine.arguments
guard args.count >= 3 else {
    print("usage: IntrospectionBench BINARY GO [PID]")
    exit(2)
}
let path = args[1], goTool = args[2]
func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0

// 1. Cold parse: a fresh GoBinary each run (no cache); the file itself is in the page cache.
var parseTimes: [Double] = []
var table: PclnTable!
for _ in 0..<7 {
    let t0 = now()
    let b = try GoBinary(path: path)
    table = try b.pclnTable()
    parseTimes.append(now() - t0)
    precondition(b.isGo)
}
parseTimes.sort()
print(String(format: "parse: %@ (%.1f MB, %d functions, inline trees: %@): median %.1f ms, min %.1f ms over 7 runs",
             (path as NSString).lastPathComponent, Double(size) / 1e6, table.functionCount, table.hasInlineTree ? "yes" : "no",
             parseTimes[3] * 1e3, parseTimes[0] * 1e3))

// 2. 100k symbolizations of addresses spread over the text (deterministic).
let funcs = table.allFunctions()
var rng: UInt64 = 42
var addrs: [UInt64] = []
addrs.reserveCapacity(100_000)
for _ in 0..<100_000 {
    rng = rng &* 6364136223846793005 &+ 1442695040888963407
    let f = funcs[Int(rng >> 33) % funcs.count]
    addrs.append(f.entry + (f.size > 1 ? (rng >> 7) % f.size : 0))
}
var frames = 0
let t0 = now()
for a in addrs { frames += table.frames(at: a).count }
let ours = now() - t0
print(String(format: "symbolize: 100000 addresses -> %d frames (inlined expanded) in %.3f s = %.2f µs/address",
             frames, ours, ours / 1e5 * 1e6))

if ProcessInfo.processInfo.environment["BENCH_SYMBOLIZE_ONLY"] != nil { exit(0) }

// Same addresses through `go tool addr2line` (reads stdin, one address per line).
let sample = addrs.prefix(20_000)
let p = Process()
p.executableURL = URL(fileURLWithPath: goTool)
p.arguments = ["tool", "addr2line", path]
p.environment = ["GOTOOLCHAIN": "local", "GOPROXY": "off", "PATH": "/usr/bin:/bin", "HOME": NSTemporaryDirectory()]
let inPipe = Pipe(), outPipe = Pipe()
p.standardInput = inPipe
p.standardOutput = outPipe
let input = sample.map { "0x" + String($0, radix: 16) }.joined(separator: "\n") + "\n"
let t1 = now()
try p.run()
let writer = Thread { inPipe.fileHandleForWriting.write(Data(input.utf8)); try? inPipe.fileHandleForWriting.close() }
writer.start()
let out = outPipe.fileHandleForReading.readDataToEndOfFile()
p.waitUntilExit()
let theirs = now() - t1
let lines = String(decoding: out, as: UTF8.self).split(separator: "\n")
// addr2line prints the outermost function and the innermost file:line; check we agree.
var agree = 0
for (i, a) in sample.enumerated() where 2 * i + 1 < lines.count {
    let fr = table.frames(at: a)
    // Both tools say "no line" for alignment padding after a function: ours ?:0, theirs :-1.
    let pos = fr.first!.line == 0 ? ":-1" : "\(fr.first!.file):\(fr.first!.line)"
    if fr.last?.function == String(lines[2 * i]) && pos == String(lines[2 * i + 1]) {
        agree += 1
    } else if ProcessInfo.processInfo.environment["BENCH_SHOW_DISAGREEMENTS"] != nil, i < 400 {
        print("  0x\(String(a, radix: 16)): ours \(fr.map { "\($0.function) \($0.file):\($0.line)" }) vs addr2line \(lines[2 * i]) \(lines[2 * i + 1])")
    }
}
print(String(format: "addr2line: %d addresses in %.3f s = %.2f µs/address (process start included); ours is %.0fx faster per address; %d/%d answers agree",
             sample.count, theirs, theirs / Double(sample.count) * 1e6, (theirs / Double(sample.count)) / (ours / 1e5), agree, sample.count))

// 3. One batched read of 64 scattered words from a live process.
if args.count > 3, let pid = Int32(args[3]) {
    let maps = try ProcessMaps.read(pid: pid)
    let rw = maps.filter { $0.readable && $0.writable && $0.size >= 4096 }
    var words: [UInt64] = []
    for i in 0..<64 {
        let m = rw[i % rw.count]
        rng = rng &* 6364136223846793005 &+ 1442695040888963407
        words.append((m.start + (rng >> 20) % (m.size - 8)) & ~7)
    }
    let mem = ProcessMemory(pid: pid)
    _ = try mem.readWords(words)
    let calls0 = ProcessMemory.syscallCount
    let n = 10_000
    let t2 = now()
    for _ in 0..<n { _ = try mem.readWords(words) }
    let dt = now() - t2
    print(String(format: "read: 64 scattered words from pid %d (%d mappings): %.2f µs per batch, %.1f syscalls per batch",
                 pid, rw.count, dt / Double(n) * 1e6, Double(ProcessMemory.syscallCount - calls0) / Double(n)))
}

// 4. DWARF layouts.
let dwarfPath = ProcessInfo.processInfo.environment["FERRET_DWARF_BINARY"] ?? path
if let d = try? DWARFLayouts(path: dwarfPath), d.hasDWARF {
    let t0 = now()
    let first = d.layout(of: "runtime.schedt")
    let open = now() - t0
    let t1 = now()
    for _ in 0..<1000 { _ = d.layout(of: "runtime.schedt") }
    let cached = now() - t1
    d.releaseHandle()
    let t2 = now()
    _ = d.layout(of: "runtime.m")
    let reopen = now() - t2
    print(String(format: "dwarf: %@: open + index + first layout %.1f ms (%@); 1000 cached lookups %.3f ms; after release, a new type %.1f ms",
                 (dwarfPath as NSString).lastPathComponent, open * 1e3, first == nil ? "not found" : "found",
                 cached * 1e3, reopen * 1e3))
} else {
    print("dwarf: \((dwarfPath as NSString).lastPathComponent) has no DWARF (set FERRET_DWARF_BINARY)")
}
