import CLinuxSupport
import Foundation
@testable import PerfSampling
import XCTest

extension CPUSamplerTests {
    /// The ring parser on a hand-made ring: a sample that wraps around the
    /// end, callchain markers split into kernel and user frames, LOST and
    /// THROTTLE records counted, data_tail advanced.
    func testRingParserHandlesWrapAndMarkers() throws {
        let ring = HandMadeRing()
        defer { withExtendedLifetime(ring) {} }  // `mem` is used after the last use of `ring`
        let mem = ring.mem, data = ring.data, dataSize = ring.dataSize
        var words: [UInt64] = []
        func header(_ type: UInt32, misc: UInt16, words n: Int) -> UInt64 {
            UInt64(type) | UInt64(misc) << 32 | UInt64(n * 8) << 48
        }
        let kernelMarker = UInt64(bitPattern: -128), userMarker = UInt64(bitPattern: -512)
        let chain: [UInt64] = [kernelMarker, 0xffff_ffff_8100_0010, 0xffff_ffff_8100_0020, userMarker, 0x401000, 0x401100, 0x401200]
        // PERF_RECORD_SAMPLE (9): ip, pid|tid, time, period, nr, ips
        words += [header(9, misc: 1, words: 6 + chain.count), 0xffff_ffff_8100_0010, UInt64(77) | UInt64(78) << 32, 123_456, 10_101_010, UInt64(chain.count)] + chain
        // PERF_RECORD_LOST (2): id, lost
        words += [header(2, misc: 0, words: 3), 5, 17]
        // PERF_RECORD_THROTTLE (5): time, id, stream_id
        words += [header(5, misc: 0, words: 4), 1, 2, 3]
        // A user-mode sample with no callchain
        words += [header(9, misc: 2, words: 6), 0x402000, UInt64(77) | UInt64(79) << 32, 123_999, 10_101_010, 0]
        // Start 3 words before the end of the data area, two laps in.
        let tail = UInt64(2 * dataSize - 24)
        let head = ring.write(words, tail: tail)

        let samples = UnsafeMutablePointer<ferret_perf_sample>.allocate(capacity: 8)
        let frames = UnsafeMutablePointer<UInt64>.allocate(capacity: 64)
        defer { samples.deallocate(); frames.deallocate() }
        var d = ferret_perf_drain()
        d.samples = samples; d.sample_capacity = 8; d.frames = frames; d.frame_capacity = 64
        XCTAssertEqual(ferret_perf_ring_drain(mem, &d), 0)
        XCTAssertEqual(mem.load(fromByteOffset: 1032, as: UInt64.self), head, "data_tail advanced to data_head")
        XCTAssertEqual(d.sample_count, 2)
        XCTAssertEqual(d.lost, 17)
        XCTAssertEqual(d.throttled, 1)
        XCTAssertEqual(d.malformed, 0)
        let s = samples[0]
        XCTAssertEqual(s.pid, 77); XCTAssertEqual(s.tid, 78)
        XCTAssertEqual(s.time_ns, 123_456); XCTAssertEqual(s.period, 10_101_010)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: frames + Int(s.kernel_start), count: Int(s.kernel_count))),
                       [0xffff_ffff_8100_0010, 0xffff_ffff_8100_0020])
        XCTAssertEqual(Array(UnsafeBufferPointer(start: frames + Int(s.user_start), count: Int(s.user_count))),
                       [0x401000, 0x401100, 0x401200])
        XCTAssertEqual(samples[1].tid, 79)
        XCTAssertEqual(samples[1].user_count, 0)

        // Out of room: the second sample stays in the ring for the next call.
        mem.storeBytes(of: tail, toByteOffset: 1032, as: UInt64.self)
        d = ferret_perf_drain()
        d.samples = samples; d.sample_capacity = 1; d.frames = frames; d.frame_capacity = 64
        XCTAssertEqual(ferret_perf_ring_drain(mem, &d), 1)
        XCTAssertEqual(d.sample_count, 1)
        d.sample_count = 0; d.frame_count = 0
        XCTAssertEqual(ferret_perf_ring_drain(mem, &d), 0)
        XCTAssertEqual(d.sample_count, 1)
        XCTAssertEqual(samples[0].tid, 79)
        XCTAssertEqual(d.lost, 17)

        // A corrupt header (size 0) drops the rest rather than loop.
        data.storeBytes(of: UInt64(9), toByteOffset: Int(tail) & (dataSize - 1), as: UInt64.self)
        mem.storeBytes(of: tail, toByteOffset: 1032, as: UInt64.self)
        d = ferret_perf_drain()
        d.samples = samples; d.sample_capacity = 8; d.frames = frames; d.frame_capacity = 64
        XCTAssertEqual(ferret_perf_ring_drain(mem, &d), -EPROTO)
        XCTAssertEqual(d.malformed, 1)
        XCTAssertEqual(mem.load(fromByteOffset: 1032, as: UInt64.self), head)
    }

    /// Records with user registers and a stack copy (PERF_SAMPLE_REGS_USER,
    /// PERF_SAMPLE_STACK_USER) on a hand-made ring, the copy wrapping around the
    /// end: registers in bit order (BP, SP, IP), only `dyn_size` bytes kept, a
    /// sample taken with no user registers (abi 0) keeps its callchain alone, and
    /// a full stack buffer leaves the record for the next call.
    func testRingParserReadsRegistersAndStackCopy() throws {
        let ring = HandMadeRing()
        defer { withExtendedLifetime(ring) {} }  // `mem` is used after the last use of `ring`
        let mem = ring.mem
        func header(_ n: Int, misc: UInt16 = 2) -> UInt64 { 9 | UInt64(misc) << 32 | UInt64(n * 8) << 48 }
        let userMarker = UInt64(bitPattern: -512)
        let stackBytes = 64  // the size asked for; the second record's copy is 40 bytes deep (dyn_size)
        let stackWords: [UInt64] = (0..<8).map { 0x1111_0000 + UInt64($0) }
        var words: [UInt64] = []
        // ip, pid|tid, time, period, nr, ips; abi, bp, sp, ip; size, data[64], dyn_size
        let chain: [UInt64] = [userMarker, 0x401000, 0x401100]
        var body: [UInt64] = [0x401000, UInt64(7) | UInt64(8) << 32, 1, 2, UInt64(chain.count)] + chain
        body += [2 /* PERF_SAMPLE_REGS_ABI_64 */, 0x7ff0_0040, 0x7ff0_0000, 0x401000]
        body += [UInt64(stackBytes)] + stackWords + [UInt64(stackBytes)]
        words += [header(1 + body.count)] + body
        var second = body
        second[1] = UInt64(7) | UInt64(9) << 32
        second[second.count - 1] = 40
        words += [header(1 + second.count)] + second
        // abi 0 (a kernel thread, no user registers): no registers, and size 0 (no data, no dyn_size).
        let third: [UInt64] = [0xffff_ffff_8100_0000, UInt64(7) | UInt64(10) << 32, 3, 4, 0, 0, 0]
        words += [header(1 + third.count, misc: 1)] + third
        let tail = UInt64(2 * ring.dataSize - 8 * 20)  // the first record's copy wraps around the end
        let head = ring.write(words, tail: tail)

        let samples = UnsafeMutablePointer<ferret_perf_sample>.allocate(capacity: 8)
        let frames = UnsafeMutablePointer<UInt64>.allocate(capacity: 64)
        let stack = UnsafeMutablePointer<UInt8>.allocate(capacity: 256)
        defer { samples.deallocate(); frames.deallocate(); stack.deallocate() }
        func drain(stackCapacity: UInt32) -> (Int32, ferret_perf_drain) {
            var d = ferret_perf_drain()
            d.samples = samples; d.sample_capacity = 8; d.frames = frames; d.frame_capacity = 64
            d.stack_bytes = UInt32(stackBytes); d.stack = stack; d.stack_capacity = stackCapacity
            return (ferret_perf_ring_drain(mem, &d), d)
        }
        var (r, d) = drain(stackCapacity: 256)
        XCTAssertEqual(r, 0)
        XCTAssertEqual(d.sample_count, 3)
        XCTAssertEqual(d.malformed, 0)
        XCTAssertEqual(mem.load(fromByteOffset: 1032, as: UInt64.self), head)
        let a = samples[0], b = samples[1], c = samples[2]
        XCTAssertEqual(a.has_regs, 1)
        XCTAssertEqual([a.user_bp, a.user_sp, a.user_ip], [0x7ff0_0040, 0x7ff0_0000, 0x401000])
        XCTAssertEqual(Array(UnsafeBufferPointer(start: frames + Int(a.user_start), count: Int(a.user_count))), [0x401000, 0x401100])
        func copied(_ s: ferret_perf_sample) -> [UInt64] {
            (0..<Int(s.stack_len) / 8).map { UnsafeRawPointer(stack + Int(s.stack_start)).loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self) }
        }
        XCTAssertEqual(copied(a), stackWords)
        XCTAssertEqual(b.tid, 9)
        XCTAssertEqual(copied(b), Array(stackWords.prefix(5)), "only dyn_size bytes")
        XCTAssertEqual(c.tid, 10)
        XCTAssertEqual(c.has_regs, 0)
        XCTAssertEqual(c.stack_len, 0)

        // Room for one copy: the second record waits for the next call.
        mem.storeBytes(of: tail, toByteOffset: 1032, as: UInt64.self)
        (r, d) = drain(stackCapacity: 100)
        XCTAssertEqual(r, 1)
        XCTAssertEqual(d.sample_count, 1)
        (r, d) = drain(stackCapacity: 100)
        XCTAssertEqual(r, 1)
        XCTAssertEqual(samples[0].tid, 9)
        XCTAssertEqual(copied(samples[0]), Array(stackWords.prefix(5)))
    }

    /// Why events are per CPU: the kernel refuses to mmap an inherited event
    /// that follows a thread on any CPU, and maps one bound to a CPU.
    func testKernelRefusesRingOfInheritedPerThreadEvent() throws {
        let anyCPU = ferret_perf_cpu_clock_open(getpid(), -1, 99, 0, 127, 0, 0)
        XCTAssertGreaterThanOrEqual(anyCPU, 0, "open: \(SamplerError.errnoText(-anyCPU))")
        defer { ferret_perf_close(anyCPU) }
        var err: Int32 = 0
        let refused = ferret_perf_ring_map(anyCPU, 1, &err)
        XCTAssertNil(refused)
        XCTAssertEqual(err, EINVAL, SamplerError.errnoText(err))
        if let refused { ferret_perf_ring_unmap(refused, 1) }

        let cpu0 = ferret_perf_cpu_clock_open(getpid(), 0, 99, 0, 127, 0, 0)
        XCTAssertGreaterThanOrEqual(cpu0, 0)
        defer { ferret_perf_close(cpu0) }
        let ring = ferret_perf_ring_map(cpu0, 1, &err)
        XCTAssertNotNil(ring, SamplerError.errnoText(err))
        defer { if let ring { ferret_perf_ring_unmap(ring, 1) } }
        // Another event on the same CPU can write into that ring; one on another CPU cannot.
        let cpu0b = ferret_perf_cpu_clock_open(getpid(), 0, 99, 0, 127, 0, 0)
        defer { ferret_perf_close(cpu0b) }
        XCTAssertEqual(ferret_perf_set_output(cpu0b, cpu0), 0)
        if Attachment.onlineCPUs().count > 1 {
            let cpu1 = ferret_perf_cpu_clock_open(getpid(), 1, 99, 0, 127, 0, 0)
            defer { ferret_perf_close(cpu1) }
            XCTAssertEqual(ferret_perf_set_output(cpu1, cpu0), -EINVAL)
        }
    }
}

/// A perf ring made by hand for the parser tests: a control page and one data
/// page, zeroed, with data_offset and data_size set.
final class HandMadeRing {
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    var dataSize: Int { page }
    let mem: UnsafeMutableRawPointer
    var data: UnsafeMutableRawPointer { mem + page }

    init() {
        mem = UnsafeMutableRawPointer.allocate(byteCount: 2 * page, alignment: page)
        mem.initializeMemory(as: UInt8.self, repeating: 0, count: 2 * page)
        // struct perf_event_mmap_page: data_head @1024, data_tail @1032, data_offset @1040, data_size @1048.
        mem.storeBytes(of: UInt64(page), toByteOffset: 1040, as: UInt64.self)
        mem.storeBytes(of: UInt64(dataSize), toByteOffset: 1048, as: UInt64.self)
    }

    deinit { mem.deallocate() }

    /// Writes `words` from ring position `tail` on (wrapping around the data
    /// area's end), sets data_tail to `tail` and data_head past them; returns the head.
    func write(_ words: [UInt64], tail: UInt64) -> UInt64 {
        for (i, w) in words.enumerated() {
            data.storeBytes(of: w, toByteOffset: (Int(tail) + 8 * i) & (dataSize - 1), as: UInt64.self)
        }
        let head = tail + UInt64(8 * words.count)
        mem.storeBytes(of: head, toByteOffset: 1024, as: UInt64.self)
        mem.storeBytes(of: tail, toByteOffset: 1032, as: UInt64.self)
        return head
    }
}
