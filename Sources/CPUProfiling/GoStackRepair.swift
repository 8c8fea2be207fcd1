import GoIntrospection

/// Repairs the kernel's frame-pointer callchain of a sample with Go's own unwind
/// tables, from the registers and the copy of the user stack the sample carries.
///
/// Frame pointers miss frames in two ways on Go code:
/// - a function without a frame of its own (a small leaf), or one sampled in its
///   prologue before it set RBP, leaves RBP at its caller's frame: the kernel's
///   walk goes from the leaf straight to the caller's caller, and the caller is lost;
/// - hand-written assembly that uses RBP as a data register (crypto/sha256's
///   block, `LEAQ K256<>(SB), BP`) breaks the chain at the leaf: the kernel reads
///   garbage, and the sample is left with the leaf alone.
///
/// Go's traceback does not use frame pointers: each function's pcsp table gives
/// how far SP is below the return address at every PC (runtime.funcspdelta).
/// This walks the same way through the stack copy, leaf first, until the
/// return-address slot it reaches is the one the frame-pointer chain starts at
/// (RBP + 8): from there the kernel's chain is right, and the frames found before
/// it are put in front of it. A walk that reaches the outermost frame (goexit,
/// mstart) is the whole stack. A walk that ends first (the copy runs out, code
/// that is not Go, a function that switches stacks) keeps whichever of the two
/// stacks is longer. A chain that goes on past an outermost frame is cut there.
/// Written by hand: no unwinding library reads Go's pcsp tables.
public enum GoStackRepair {
    /// The walk's bound (the kernel's callchains are at most 127 deep).
    public static let maxFrames = 128

    public enum Outcome: Sendable, Equatable {
        /// The frame-pointer chain was right as it was (or the leaf is not Go code).
        case unchanged
        /// Frames the chain missed were put in front of it where it joins the walk.
        case joined
        /// The walk reached the outermost frame and replaced the chain.
        case complete
        /// The walk ended early but found more than the chain did, and replaced it.
        case partial
        /// The chain went on past an outermost frame (goexit, mstart) and was cut there.
        case trimmed
    }

    /// `chain`: the user callchain, leaf first (its first entry is the sample's
    /// user IP); `ip`, `sp`, `bp`: the user registers; `stack`: the bytes of the
    /// user stack from `sp` up. A return address read from the copy must lie in
    /// executable memory of the process (`symbolizer.isCode`).
    public static func repair(chain: [UInt64], ip: UInt64, sp: UInt64, bp: UInt64, stack: [UInt8],
                              symbolizer: ProcessSymbolizer) -> (stack: [UInt64], outcome: Outcome) {
        guard let first = chain.first, first == ip, !stack.isEmpty else { return (chain, .unchanged) }
        var frames = [ip]
        var pc = ip, cur = sp, isReturn = false
        let joinSlot = bp &+ 8
        var joined = false, complete = false
        while frames.count < maxFrames {
            guard let info = symbolizer.goUnwindInfo(pc, isReturnAddress: isReturn) else { break }
            if info.isTop {
                complete = true
                break
            }
            let slot = cur &+ UInt64(info.spDelta)
            if slot == joinSlot {
                joined = true
                break
            }
            // Past a function that sets SP itself the tables say nothing.
            if info.writesSP { break }
            let offset = slot &- sp
            guard slot >= sp, stack.count >= 8, offset <= UInt64(stack.count - 8) else { break }  // past the copy
            let ra = stack.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: Int(offset), as: UInt64.self) }
            guard symbolizer.isCode(ra) else { break }
            frames.append(ra)
            cur = slot &+ 8
            pc = ra
            isReturn = true
        }
        if joined {
            // The walked frames are not outermost (the walk stops at one): only the
            // chain's frames after them are looked at for the cut.
            if frames.count == 1 { return trimmed(chain, from: 1, symbolizer) }
            return (trimmed(frames + chain.dropFirst(), from: frames.count, symbolizer).stack, .joined)
        }
        if complete { return frames == chain ? (chain, .unchanged) : (frames, .complete) }
        // The chain's frames up to the first that is not code (a broken chain reads garbage).
        var valid = 1
        while valid < chain.count, symbolizer.isCode(chain[valid]) { valid += 1 }
        return frames.count > valid ? (frames, .partial) : trimmed(chain, from: 0, symbolizer)
    }

    /// `stack` cut after its first outermost Go frame (goexit, mstart) at index
    /// `start` or later, as Go's traceback stops there: a frame-pointer chain can go
    /// on past it into whatever the stack held before (an old frame of another
    /// goroutine on a g0 stack).
    static func trimmed(_ stack: [UInt64], from start: Int, _ symbolizer: ProcessSymbolizer)
        -> (stack: [UInt64], outcome: Outcome)
    {
        var i = start
        while i + 1 < stack.count {  // an outermost frame that is last needs no cut
            if symbolizer.goUnwindInfo(stack[i], isReturnAddress: i > 0)?.isTop == true {
                return (Array(stack[...i]), .trimmed)
            }
            i += 1
        }
        return (stack, .unchanged)
    }
}
