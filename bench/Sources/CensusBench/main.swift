// The cost of a goroutine census from outside (issue #19): GoroutineCensus.take
// against the census fixture holding 1,000 / 10,000 / 100,000 parked goroutines
// (8 frames deep each), with and without stacks. Agent CPU is the calling
// thread's CPU time (CLOCK_THREAD_CPUTIME_ID: process_vm_readv copies count,
// the kernel's work for us included); wall time beside it.
//
// Usage: CensusBench FIXTURE [RUNS]   (FIXTURE: the census fixture's binary)
import Foundation
import GoIntrospection

func clock(_ id: clockid_t) -> UInt64 {
    var ts = timespec()
    clock_gettime(id, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func readLine(_ h: FileHandle) -> String {
    var data = Data()
    while true {
        let b = h.readData(ofLength: 1)
        if b.isEmpty || b[0] == 10 { break }
        data.append(b)
    }
    return String(decoding: data, as: UTF8.self)
}

let args = CommandLine.arguments
guard args.count >= 2 else {
    print("usage: CensusBench FIXTURE [RUNS]")
    exit(2)
}
let runs = args.count > 2 ? Int(args[2]) ?? 20 : 20
let p = Process()
p.executableURL = URL(fileURLWithPath: args[1])
let input = Pipe(), output = Pipe()
p.standardInput = input
p.standardOutput = output
try p.run()
defer { p.terminate() }
_ = readLine(output.fileHandleForReading)
let census = try GoroutineCensus(pid: p.processIdentifier, binary: try GoBinary(path: args[1]))
var parked = 0
print("census of the fixture (\(census.goVersion)), \(runs) runs each: median and p90 of agent CPU (ms), median wall (ms), bytes read")
for target in [1_000, 10_000, 100_000] {
    input.fileHandleForWriting.write(Data("park \(target - parked)\n".utf8))
    _ = readLine(output.fileHandleForReading)
    parked = target
    for stacks in [false, true] {
        var cpu: [Double] = [], wall: [Double] = []
        var last: GoroutineCensusResult?
        for _ in 0..<runs {
            let c0 = clock(CLOCK_THREAD_CPUTIME_ID), w0 = clock(CLOCK_MONOTONIC)
            last = try census.take(.init(stacks: stacks))
            cpu.append(Double(clock(CLOCK_THREAD_CPUTIME_ID) - c0) / 1e6)
            wall.append(Double(clock(CLOCK_MONOTONIC) - w0) / 1e6)
        }
        cpu.sort(); wall.sort()
        let r = last!
        let n = r.goroutines.filter { !$0.isSystem }.count
        print(String(format: "%7d goroutines, ", n) + (stacks ? "with stacks:    " : "without stacks: ")
            + String(format: "cpu %.2f / p90 %.2f ms, wall %.2f ms, %d bytes, %d changed",
                     cpu[cpu.count / 2], cpu[cpu.count * 9 / 10], wall[wall.count / 2], r.bytesRead, r.changed))
    }
}
