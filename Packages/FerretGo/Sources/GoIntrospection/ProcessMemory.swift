import Glibc
import Synchronization

/// Reads another process's memory with `process_vm_readv(2)`.
///
/// The target is never stopped, traced or written: there is no ptrace attach, no
/// signal, no injected code. The kernel copies straight from the target's pages,
/// so a read of memory the target is changing at the same moment can see a torn
/// (half old, half new) value; callers that need a consistent snapshot of a
/// structure must validate what they read (sequence counters, re-reads, sanity checks).
///
/// Reading requires the same permission as `ptrace(PTRACE_MODE_ATTACH)`: root
/// (CAP_SYS_PTRACE) or the same user with Yama `ptrace_scope` 0. Pages the target
/// has never touched read as zeros (they are faulted in on the target's behalf);
/// unmapped addresses fail with ``ProcessReadError/fault(pid:address:)``.
///
/// Thread-safe: the value holds nothing but the pid.
public struct ProcessMemory: Sendable {
    public let pid: Int32

    /// The kernel's limit on iovecs per call (`IOV_MAX`, UIO_MAXIOV on Linux).
    public static let maxIOVecs = 1024

    private static let syscallCounter = Atomic<Int>(0)

    private typealias ProcessVMReadv = @convention(c) (
        pid_t, UnsafePointer<iovec>?, UInt, UnsafePointer<iovec>?, UInt, UInt) -> Int

    /// glibc's `process_vm_readv`. Swift's Glibc module is built without _GNU_SOURCE, which
    /// hides the declaration (bits/uio-ext.h), so it is looked up once by name instead.
    private static let processVMReadv: ProcessVMReadv? =
        dlsym(UnsafeMutableRawPointer(bitPattern: 0) /* RTLD_DEFAULT */, "process_vm_readv")
            .map { unsafeBitCast($0, to: ProcessVMReadv.self) }

    /// process_vm_readv, counted; sets errno = ENOSYS and returns -1 if libc lacks it.
    @inline(__always)
    private static func readv(_ pid: Int32, _ local: UnsafePointer<iovec>, _ localCount: Int,
                              _ remote: UnsafePointer<iovec>, _ remoteCount: Int) -> Int {
        syscallCounter.add(1, ordering: .relaxed)
        guard let f = processVMReadv else {
            errno = ENOSYS
            return -1
        }
        return f(pid, local, UInt(localCount), remote, UInt(remoteCount), 0)
    }

    /// How many `process_vm_readv` calls this process has made through `ProcessMemory`
    /// so far (all instances, all threads). For benchmarks and tests that check how
    /// many system calls a batch costs; one relaxed atomic increment per call.
    public static var syscallCount: Int { syscallCounter.load(ordering: .relaxed) }

    /// The largest total a single read or batch may ask for (256 MiB). Lengths often come
    /// from the target's own memory (a Go string's or slice's len), where garbage is possible:
    /// a negative count, or a total above this, throws `.other(errno: EINVAL)` rather than
    /// trapping or trying to allocate it.
    public static let maxReadCount = 256 << 20

    public init(pid: Int32) { self.pid = pid }

    /// Reads `count` bytes at `address`. One system call.
    ///
    /// Throws `.fault(address)` if any byte of the range is not mapped (the data that
    /// could be read is discarded: a partial object is never returned), and
    /// `.other(errno: EINVAL)` if `count` is negative or above ``maxReadCount``.
    public func read(_ address: UInt64, count: Int) throws(ProcessReadError) -> [UInt8] {
        guard count >= 0, count <= Self.maxReadCount else { throw .other(pid: pid, errno: EINVAL) }
        if count == 0 { return [] }
        var out = [UInt8](repeating: 0, count: count)
        var failure: ProcessReadError?
        out.withUnsafeMutableBytes { buf in
            do throws(ProcessReadError) { try readRaw(address, into: buf) } catch { failure = error }
        }
        if let failure { throw failure }
        return out
    }

    /// Reads a little-endian integer at `address` (unaligned addresses are fine). One system call.
    public func read<T: FixedWidthInteger>(_ type: T.Type, at address: UInt64) throws(ProcessReadError) -> T {
        var value = T.zero
        var failure: ProcessReadError?
        withUnsafeMutableBytes(of: &value) { buf in
            do throws(ProcessReadError) { try readRaw(address, into: buf) } catch { failure = error }
        }
        if let failure { throw failure }
        return T(littleEndian: value)
    }

    /// Reads `buffer.count` bytes at `address` into caller-owned memory. One system call,
    /// no allocation. Throws `.fault(address)` on a short read.
    public func readRaw(_ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(ProcessReadError) {
        guard buffer.count > 0, let base = buffer.baseAddress else { return }
        var local = iovec(iov_base: base, iov_len: buffer.count)
        var remote = iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt(address)), iov_len: buffer.count)
        let n = Self.readv(pid, &local, 1, &remote, 1)
        if n < 0 { throw ProcessReadError.from(errno: errno, pid: pid, faultAddress: address) }
        if n != buffer.count { throw .fault(pid: pid, address: address) }
    }

    /// Many small reads in as few system calls as possible.
    ///
    /// One `process_vm_readv` per up to ``maxIOVecs`` (1024) requests: the remote side
    /// is one iovec per request, the local side one contiguous buffer. Returns one
    /// `[UInt8]` per request, in order (`count` 0 gives `[]` and costs nothing).
    ///
    /// If any request cannot be read in full, throws `.fault` with the address of the
    /// first such request: the kernel reads the remote iovecs in order and stops at the
    /// first unmapped page, and the byte count it returns tells which request that was.
    /// Requests after it are not read (the whole batch fails; retry the others
    /// individually if you need them).
    public func readBatch(_ requests: [(address: UInt64, count: Int)]) throws(ProcessReadError) -> [[UInt8]] {
        let packed = try readBatchContiguous(requests)
        var out: [[UInt8]] = []
        out.reserveCapacity(requests.count)
        var offset = 0
        for r in requests {
            out.append(Array(packed[offset..<(offset + r.count)]))
            offset += r.count
        }
        return out
    }

    /// Like ``readBatch(_:)`` but returns the requests' bytes back to back in one array
    /// (request `i` starts at the sum of the counts before it): one allocation in all.
    public func readBatchContiguous(_ requests: [(address: UInt64, count: Int)]) throws(ProcessReadError) -> [UInt8] {
        var total = 0
        for r in requests {
            guard r.count >= 0, r.count <= Self.maxReadCount - total else { throw .other(pid: pid, errno: EINVAL) }
            total += r.count
        }
        if total == 0 { return [] }
        var out = [UInt8](repeating: 0, count: total)
        var failure: ProcessReadError?
        out.withUnsafeMutableBytes { buf in
            requests.withUnsafeBufferPointer { reqs in
                do throws(ProcessReadError) {
                    try readBatchRaw(count: reqs.count, address: { reqs[$0].address }, size: { reqs[$0].count }, into: buf)
                } catch { failure = error }
            }
        }
        if let failure { throw failure }
        return out
    }

    /// Reads an 8-byte little-endian word at each address, batched like ``readBatch(_:)``.
    ///
    /// Up to 1024 addresses cost exactly one `process_vm_readv` (so 64 scattered words in a
    /// live process are one system call; see ``syscallCount``) and one allocation (the result).
    /// Throws `.fault` naming the first address that could not be read.
    public func readWords(_ addresses: [UInt64]) throws(ProcessReadError) -> [UInt64] {
        if addresses.isEmpty { return [] }
        guard addresses.count <= Self.maxReadCount / 8 else { throw .other(pid: pid, errno: EINVAL) }
        var out = [UInt64](repeating: 0, count: addresses.count)
        var failure: ProcessReadError?
        out.withUnsafeMutableBytes { buf in
            addresses.withUnsafeBufferPointer { addrs in
                do throws(ProcessReadError) {
                    try readBatchRaw(count: addrs.count, address: { addrs[$0] }, size: { _ in 8 }, into: buf)
                } catch { failure = error }
            }
        }
        if let failure { throw failure }
        #if _endian(big)
        for i in out.indices { out[i] = UInt64(littleEndian: out[i]) }
        #endif
        return out
    }

    /// The batching core: requests `0..<count` (given by `address(i)`, `size(i)`) are read
    /// back to back into `buffer`, whose size must be the sum of the sizes.
    @inline(__always)
    private func readBatchRaw(count: Int, address: (Int) -> UInt64, size: (Int) -> Int,
                              into buffer: UnsafeMutableRawBufferPointer) throws(ProcessReadError) {
        guard let base = buffer.baseAddress else { return }
        let chunk = Swift.min(count, Self.maxIOVecs)
        try withUnsafeTemporaryAllocation(of: iovec.self, capacity: chunk) { (remote: UnsafeMutableBufferPointer<iovec>) throws(ProcessReadError) in
            var first = 0           // first request of this chunk
            var bufferOffset = 0    // where that request's bytes go
            while first < count {
                let end = Swift.min(first + Self.maxIOVecs, count)
                var n = 0
                var bytes = 0
                for i in first..<end {
                    let len = size(i)
                    if len == 0 { continue } // nothing to read: leave it out of the syscall
                    remote[n] = iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt(address(i))), iov_len: len)
                    n += 1
                    bytes += len
                }
                if n > 0 {
                    var local = iovec(iov_base: base + bufferOffset, iov_len: bytes)
                    let got = Self.readv(pid, &local, 1, UnsafePointer(remote.baseAddress!), n)
                    if got < 0 && errno != EFAULT { throw ProcessReadError.from(errno: errno, pid: pid) }
                    if got != bytes {
                        // EFAULT (nothing read) or a short count: find the request holding byte `got`.
                        // (The kernel copies page by page, so despite what process_vm_readv(2) says
                        // a short count can end inside a request, not only between two.)
                        let done = Swift.max(got, 0)
                        var cumulative = 0
                        for i in first..<end {
                            let len = size(i)
                            if len == 0 { continue }
                            if cumulative + len > done { throw .fault(pid: pid, address: address(i)) }
                            cumulative += len
                        }
                        throw .fault(pid: pid, address: address(first)) // unreachable: got < bytes
                    }
                }
                bufferOffset += bytes
                first = end
            }
        }
    }
}
