import CCapstone
import Glibc
import Synchronization

/// x86-64 machine code decoded with capstone (Debian's libcapstone-dev): what
/// the HTTP tracer needs to place probes (RETs, ENDBR64) and what the globals
/// locator needs to read code references (RIP-relative memory operands).
public enum X86Decoder {
    public struct Failure: Error, CustomStringConvertible, Equatable {
        public var description: String
        public init(_ d: String) { description = d }
    }

    public struct Instruction: Sendable, Equatable {
        public var address: UInt64
        public var size: Int
        public var isReturn: Bool
        public var isEndbr64: Bool
        /// Capstone's Intel mnemonic ("mov", "lea", "movsxd", …); empty unless
        /// decoded with `details`.
        public var mnemonic: String = ""
        /// The address a RIP-relative memory operand refers to (next
        /// instruction + displacement); nil when the instruction has none or
        /// was decoded without `details`.
        public var ripTarget: UInt64?
    }

    /// Runs `body` with capstone held open, so that the `decode` calls of one
    /// batch (a binary's code references, a function's RETs) load it once:
    /// opening it costs about a millisecond of relocations each time. A library
    /// that cannot be loaded is reported by `decode` itself.
    public static func session<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let held = (try? Capstone.shared.acquire()) != nil
        defer { if held { Capstone.shared.release() } }
        return try body()
    }

    /// Decodes `code` (loaded at `address`) to the end. Throws when an
    /// instruction cannot be decoded: a caller that needs every RET, or the
    /// k-th RIP-relative operand, cannot use a partial list.
    /// `details` adds mnemonics and RIP-relative targets (slower).
    public static func decode(_ code: [UInt8], address: UInt64, details: Bool = false) throws(Failure) -> [Instruction] {
        let cs = try Capstone.shared.acquire()
        defer { Capstone.shared.release() }
        var handle: csh = 0
        guard cs.open(CS_ARCH_X86, CS_MODE_64, &handle) == CS_ERR_OK else {
            throw Failure("capstone: cs_open(x86, 64) failed")
        }
        defer { _ = cs.close(&handle) }
        if details { _ = cs.option(handle, CS_OPT_DETAIL, Int(CS_OPT_ON.rawValue)) }
        var out: [Instruction] = []
        var offset = 0
        while offset < code.count {
            var insn: UnsafeMutablePointer<cs_insn>?
            // Decode in chunks; cs_disasm stops at the first undecodable byte.
            let n = code.withUnsafeBufferPointer { b in
                cs.disasm(handle, b.baseAddress! + offset, b.count - offset, address &+ UInt64(offset), 0, &insn)
            }
            guard n > 0, let insn else {
                let byte = String(format: "%02x", code[offset])
                throw Failure("undecodable instruction at 0x\(String(address &+ UInt64(offset), radix: 16)) (byte \(byte))")
            }
            defer { cs.free(insn, n) }
            for i in 0..<n {
                let x = insn[i]
                var d = Instruction(
                    address: x.address, size: Int(x.size),
                    isReturn: x.id == X86_INS_RET.rawValue,
                    isEndbr64: x.id == X86_INS_ENDBR64.rawValue)
                if details, let detail = x.detail {
                    d.mnemonic = withUnsafeBytes(of: x.mnemonic) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                    d.ripTarget = ripTarget(detail.pointee.x86, next: x.address &+ UInt64(x.size))
                }
                out.append(d)
                offset += Int(x.size)
            }
        }
        return out
    }

    /// The target of the instruction's RIP-relative memory operand, if any
    /// (Go's code has at most one memory operand per instruction).
    static func ripTarget(_ x86: cs_x86, next: UInt64) -> UInt64? {
        var ops = x86.operands
        let count = Int(x86.op_count)
        return withUnsafeBytes(of: &ops) { raw -> UInt64? in
            let list = raw.bindMemory(to: cs_x86_op.self)
            for i in 0..<min(count, list.count) where list[i].type == X86_OP_MEM {
                let m = list[i].mem
                if m.base == X86_REG_RIP && m.index == X86_REG_INVALID {
                    return UInt64(bitPattern: Int64(bitPattern: next) &+ m.disp)
                }
            }
            return nil
        }
    }
}

/// libcapstone, opened with dlopen while something decodes and closed when the
/// last decoder is done. Linked the usual way, its tables (77,000 relocations)
/// were resident in every agent and plugin, 3 to 5 MiB, though only stripped
/// binaries and the http_tracer's RET finder decode anything.
final class Capstone: Sendable {
    struct API: @unchecked Sendable {
        typealias Open = @convention(c) (cs_arch, cs_mode, UnsafeMutablePointer<csh>?) -> cs_err
        typealias Option = @convention(c) (csh, cs_opt_type, Int) -> cs_err
        typealias Disasm = @convention(c) (csh, UnsafePointer<UInt8>?, Int, UInt64, Int,
                                           UnsafeMutablePointer<UnsafeMutablePointer<cs_insn>?>?) -> Int
        typealias Free = @convention(c) (UnsafeMutablePointer<cs_insn>?, Int) -> Void
        typealias Close = @convention(c) (UnsafeMutablePointer<csh>?) -> cs_err
        let library: UnsafeMutableRawPointer
        let open: Open, option: Option, disasm: Disasm, free: Free, close: Close
    }

    static let shared = Capstone()
    /// Debian 12's soname first, then the development link.
    static let names = ["libcapstone.so.4", "libcapstone.so.5", "libcapstone.so"]
    private let state = Mutex<(api: API?, users: Int)>((nil, 0))

    func acquire() throws(X86Decoder.Failure) -> API {
        let result: Result<API, X86Decoder.Failure> = state.withLock { s in
            if let api = s.api { s.users += 1; return .success(api) }
            switch Self.load() {
            case .success(let api): s = (api, 1); return .success(api)
            case .failure(let e): return .failure(e)
            }
        }
        return try result.get()
    }

    func release() {
        state.withLock { s in
            s.users -= 1
            if s.users == 0, let api = s.api { dlclose(api.library); s.api = nil }
        }
    }

    private static func load() -> Result<API, X86Decoder.Failure> {
        var errors: [String] = []
        for name in names {
            guard let lib = dlopen(name, RTLD_NOW | RTLD_LOCAL) else {
                errors.append(dlerror().map { String(cString: $0) } ?? name)
                continue
            }
            func sym<T>(_ s: String, _: T.Type) -> T? { dlsym(lib, s).map { unsafeBitCast($0, to: T.self) } }
            guard let o = sym("cs_open", API.Open.self), let op = sym("cs_option", API.Option.self),
                  let d = sym("cs_disasm", API.Disasm.self), let f = sym("cs_free", API.Free.self),
                  let c = sym("cs_close", API.Close.self)
            else {
                dlclose(lib)
                errors.append("\(name): a cs_* function is missing")
                continue
            }
            return .success(API(library: lib, open: o, option: op, disasm: d, free: f, close: c))
        }
        return .failure(X86Decoder.Failure("capstone could not be loaded (install libcapstone4): " + errors.joined(separator: "; ")))
    }
}
