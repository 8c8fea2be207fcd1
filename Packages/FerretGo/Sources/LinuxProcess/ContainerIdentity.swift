/// The container and Kubernetes pod a process runs in, as its cgroup path names them.
///
/// Container runtimes and the kubelet name the cgroup of every container (and of
/// every pod) after its id, so /proc/PID/cgroup tells which container a process
/// belongs to without asking a runtime: no socket, no API call, nothing to
/// configure. Only the layouts of known runtimes are recognised, component by
/// component, so an unrelated cgroup that merely holds a long hex name gives no
/// identity. The layouts (`<id>` is 64 lowercase hex digits):
///
/// - Docker: `docker-<id>.scope` (systemd driver), `docker/<id>` (cgroupfs);
/// - containerd's CRI plugin: `cri-containerd-<id>.scope`;
/// - CRI-O: `crio-<id>.scope`, or `crio-<id>` below a cgroupfs pod; `crio-conmon-…`
///   is its monitor;
/// - Podman: `libpod-<id>.scope` (rootful and rootless), `libpod_parent/libpod-<id>`
///   (cgroupfs); `libpod-conmon-…` is its monitor;
/// - Kubernetes pods: `kubepods[-<qos>]-pod<uid>.slice` (systemd driver, dashes of
///   the UID written as underscores), `kubepods/[<qos>/]pod<uid>` (cgroupfs), where
///   a bare `<id>` directly below the pod is a container of unknown runtime.
///
/// Components after the container's (`init.scope`, a v2 leaf such as `container`)
/// are ignored, and a path seen from inside a cgroup namespace (leading `..`, top
/// slices missing) reads the same.
public struct ContainerIdentity: Sendable, Equatable {
    /// The container's full id (64 lowercase hex digits) as the runtime names it.
    /// nil for a pod-level cgroup and for a runtime's monitor process (conmon),
    /// which runs beside the container rather than in it.
    public var containerID: String?
    /// The OpenTelemetry `container.runtime`: "docker", "containerd", "cri-o" or
    /// "podman". nil when the layout does not tell: the kubelet's cgroupfs driver
    /// names a container by its bare id, whatever the runtime.
    public var runtime: String?
    /// The Kubernetes pod UID, lowercase: the canonical dashed 8-4-4-4-12 form for
    /// pods from the API server (the systemd driver's underscores turned back
    /// into dashes), the 32 hex digits of the manifest hash for static pods.
    public var podUID: String?
    /// The cgroup path the identity was read from: one line of /proc/PID/cgroup
    /// after its second colon, without the " (deleted)" of a removed cgroup.
    public var cgroupPath: String

    /// An identity with the given values, e.g. as a test's expectation.
    public init(containerID: String? = nil, runtime: String? = nil, podUID: String? = nil, cgroupPath: String) {
        self.containerID = containerID
        self.runtime = runtime
        self.podUID = podUID
        self.cgroupPath = cgroupPath
    }

    /// The OpenTelemetry resource attributes of the values that are set:
    /// `container.id`, `container.runtime`, `k8s.pod.uid`.
    public var attributes: [(key: String, value: String)] {
        var out: [(key: String, value: String)] = []
        out.reserveCapacity(3)
        if let containerID { out.append((key: "container.id", value: containerID)) }
        if let runtime { out.append((key: "container.runtime", value: runtime)) }
        if let podUID { out.append((key: "k8s.pod.uid", value: podUID)) }
        return out
    }

    /// Reads the identity from the full text of /proc/PID/cgroup: cgroup v1
    /// (`N:controllers:/path` lines), v2 (`0::/path`) or both (hybrid hosts).
    ///
    /// Every line is looked at, because on a hybrid host the `0::` line may stay
    /// at `/` (or at the runtime's service) while the v1 lines carry the
    /// container's path. A line that names a container id wins over one that only
    /// names a pod or a monitor; among equals the v2 line comes first, then the v1
    /// lines in file order. nil when no line matches a known layout: a process
    /// outside any container, or text that is not a cgroup file at all.
    ///
    /// The text is read as bytes, in place: Strings are made only for the result.
    public static func parse(cgroupFile text: String) -> ContainerIdentity? {
        var text = text
        return text.withUTF8 { CgroupText(bytes: $0).identity() }
    }

    /// True for exactly 64 lowercase hex digits: the full container id every
    /// runtime here uses.
    static func isContainerID(_ s: String) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy(isLowerHex)
    }

    static func isLowerHex(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "f"))
    }
}

/// The bytes of a /proc/PID/cgroup file, valid for one `withUTF8` call. Lines,
/// paths and components are ranges of offsets into them.
private struct CgroupText {
    let bytes: UnsafeBufferPointer<UInt8>

    /// See `ContainerIdentity.parse(cgroupFile:)`.
    func identity() -> ContainerIdentity? {
        var unified: (path: Range<Int>, match: PathMatch)?
        var firstV1: (path: Range<Int>, match: PathMatch)?
        var firstV1WithID: (path: Range<Int>, match: PathMatch)?
        var previous: (path: Range<Int>, match: PathMatch?)?
        var lineStart = 0
        while lineStart < bytes.count {
            var lineEnd = lineStart
            while lineEnd < bytes.count && bytes[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
            defer { lineStart = lineEnd + 1 }
            guard let (isUnified, path) = fields(of: lineStart..<lineEnd) else { continue }
            // v1 controllers mostly share one path: read each run of equal paths once.
            let match: PathMatch?
            if let previous, equal(previous.path, path) {
                match = previous.match
            } else {
                match = PathMatch(self, path: path)
                previous = (path, match)
            }
            guard let match else { continue }
            if isUnified {
                if unified == nil { unified = (path, match) }
            } else {
                if firstV1 == nil { firstV1 = (path, match) }
                if firstV1WithID == nil && match.containerID != nil { firstV1WithID = (path, match) }
            }
        }
        let chosen: (path: Range<Int>, match: PathMatch)?
        if let u = unified, u.match.containerID != nil {
            chosen = u
        } else {
            chosen = firstV1WithID ?? unified ?? firstV1
        }
        guard let chosen else { return nil }
        return ContainerIdentity(
            containerID: chosen.match.containerID.map(string), runtime: chosen.match.runtime,
            podUID: chosen.match.podUID, cgroupPath: string(chosen.path))
    }

    /// Splits a line into (is the v2 line, path); nil for a line that is not
    /// `digits:controllers:/path`. The path keeps any colons it holds; the
    /// " (deleted)" the kernel appends for a removed cgroup is dropped.
    private func fields(of line: Range<Int>) -> (Bool, Range<Int>)? {
        var first = line.lowerBound
        while first < line.upperBound && bytes[first] != UInt8(ascii: ":") {
            guard bytes[first] >= UInt8(ascii: "0") && bytes[first] <= UInt8(ascii: "9") else { return nil }
            first += 1
        }
        guard first > line.lowerBound, first < line.upperBound else { return nil }
        var second = first + 1
        while second < line.upperBound && bytes[second] != UInt8(ascii: ":") { second += 1 }
        guard second < line.upperBound else { return nil }
        var path = second + 1..<line.upperBound
        if hasSuffix(path, " (deleted)") { path = path.lowerBound..<path.upperBound - 10 }
        guard !path.isEmpty, bytes[path.lowerBound] == UInt8(ascii: "/") else { return nil }
        let isUnified = first == line.lowerBound + 1 && bytes[line.lowerBound] == UInt8(ascii: "0") && second == first + 1
        return (isUnified, path)
    }

    func string(_ r: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes[r]), as: UTF8.self)
    }

    func equal(_ a: Range<Int>, _ b: Range<Int>) -> Bool {
        a.count == b.count && bytes[a].elementsEqual(bytes[b])
    }

    func equal(_ r: Range<Int>, _ s: StaticString) -> Bool {
        r.count == s.utf8CodeUnitCount && hasPrefix(r, s)
    }

    func hasPrefix(_ r: Range<Int>, _ s: StaticString) -> Bool {
        let n = s.utf8CodeUnitCount
        guard r.count >= n else { return false }
        return s.withUTF8Buffer { bytes[r.lowerBound..<r.lowerBound + n].elementsEqual($0) }
    }

    func hasSuffix(_ r: Range<Int>, _ s: StaticString) -> Bool {
        let n = s.utf8CodeUnitCount
        guard r.count >= n else { return false }
        return s.withUTF8Buffer { bytes[r.upperBound - n..<r.upperBound].elementsEqual($0) }
    }

    func isLowerHex(_ r: Range<Int>) -> Bool {
        bytes[r].allSatisfy(ContainerIdentity.isLowerHex)
    }

    func isContainerID(_ r: Range<Int>) -> Bool {
        r.count == 64 && isLowerHex(r)
    }
}

/// What one cgroup path says, read component by component from the root down.
///
/// The innermost container wins (docker-in-docker, a KinD node's containers
/// inside the node's own container), and a pod met below a container starts
/// afresh: the container above it is the node, not the pod's.
private struct PathMatch {
    var containerID: Range<Int>?
    var runtime: String?
    var podUID: String?

    /// What the previous component was, for the layouts whose meaning depends on
    /// their parent (a bare id names a container only below `docker` or a pod).
    private enum Parent {
        case start, docker, kubepodsLevel, pod, libpodParent, other
    }

    /// A container scope of the form `<prefix><64 hex>.scope`. `bareParent` is
    /// the parent below which the runtime's cgroupfs layout drops the `.scope`.
    private struct Scope {
        let prefix: StaticString
        let runtime: String
        /// conmon, the monitor CRI-O and Podman run beside each container: its
        /// cgroup names the container, but the process is not in it.
        let isMonitor: Bool
        let bareParent: Parent?
    }

    private static let scopes: [Scope] = [
        Scope(prefix: "docker-", runtime: "docker", isMonitor: false, bareParent: nil),
        Scope(prefix: "cri-containerd-", runtime: "containerd", isMonitor: false, bareParent: nil),
        Scope(prefix: "crio-", runtime: "cri-o", isMonitor: false, bareParent: .pod),
        Scope(prefix: "crio-conmon-", runtime: "cri-o", isMonitor: true, bareParent: .pod),
        Scope(prefix: "libpod-", runtime: "podman", isMonitor: false, bareParent: .libpodParent),
        Scope(prefix: "libpod-conmon-", runtime: "podman", isMonitor: true, bareParent: .libpodParent),
    ]

    /// nil when no component of `path` matches a known layout.
    init?(_ text: CgroupText, path: Range<Int>) {
        var parent = Parent.start
        var start = path.lowerBound
        for i in path.lowerBound...path.upperBound where i == path.upperBound || text.bytes[i] == UInt8(ascii: "/") {
            if start < i { parent = visit(text, start..<i, parent: parent) }
            start = i + 1
        }
        if containerID == nil && runtime == nil && podUID == nil { return nil }
    }

    /// Applies one path component and returns what it is as the next one's parent.
    private mutating func visit(_ text: CgroupText, _ component: Range<Int>, parent: Parent) -> Parent {
        // Seen from inside a cgroup namespace, cgroups outside it start with "..":
        // what follows is as good as a path from the top.
        if text.equal(component, "..") { return .start }
        if text.equal(component, "docker") { return .docker }
        if text.equal(component, "kubepods") || text.equal(component, "burstable") || text.equal(component, "besteffort") {
            return .kubepodsLevel
        }
        if text.equal(component, "libpod_parent") { return .libpodParent }
        if text.isContainerID(component) {
            switch parent {
            case .docker: setContainer(component, runtime: "docker")
            case .pod: setContainer(component, runtime: nil)
            default: break
            }
            return .other
        }
        if parent == .start || parent == .kubepodsLevel, let uid = Self.cgroupfsPodUID(text, component) {
            setPod(uid)
            return .pod
        }
        if let uid = Self.systemdPodUID(text, component) {
            setPod(uid)
            return .other
        }
        for scope in Self.scopes {
            guard let id = Self.scopeID(text, component, scope: scope, parent: parent) else { continue }
            if scope.isMonitor { setMonitor(runtime: scope.runtime) } else { setContainer(id, runtime: scope.runtime) }
            break
        }
        return .other
    }

    private mutating func setContainer(_ id: Range<Int>, runtime: String?) {
        containerID = id
        self.runtime = runtime
    }

    private mutating func setMonitor(runtime: String) {
        containerID = nil
        self.runtime = runtime
    }

    private mutating func setPod(_ uid: String) {
        podUID = uid
        containerID = nil
        runtime = nil
    }

    /// The id of `<prefix><id>.scope` (or `<prefix><id>` below the runtime's
    /// cgroupfs parent); nil when the component is anything else.
    private static func scopeID(_ text: CgroupText, _ component: Range<Int>, scope: Scope, parent: Parent) -> Range<Int>? {
        let idStart = component.lowerBound + scope.prefix.utf8CodeUnitCount
        let id = idStart..<idStart + 64
        let rest = component.upperBound - id.upperBound
        guard rest == 6 || (rest == 0 && parent == scope.bareParent),
              text.hasPrefix(component, scope.prefix),
              rest == 0 || text.hasSuffix(component, ".scope"),
              text.isLowerHex(id)
        else { return nil }
        return id
    }

    /// The UID of the kubelet's cgroupfs pod directory, `pod<uid>` with a dashed
    /// UID (or a static pod's 32 hex digits).
    private static func cgroupfsPodUID(_ text: CgroupText, _ component: Range<Int>) -> String? {
        guard text.hasPrefix(component, "pod") else { return nil }
        return podUID(text, component.lowerBound + 3..<component.upperBound, separator: UInt8(ascii: "-"))
    }

    /// The UID of the systemd driver's pod slice, `…kubepods[-qos]-pod<uid>.slice`
    /// with the UID's dashes written as underscores (a dash is the slice
    /// hierarchy separator in systemd unit names). One of the dash-separated
    /// words before the pod must be "kubepods" (KinD nodes prefix "kubelet-").
    private static func systemdPodUID(_ text: CgroupText, _ component: Range<Int>) -> String? {
        guard text.hasSuffix(component, ".slice") else { return nil }
        let name = component.lowerBound..<component.upperBound - 6
        guard let dash = name.last(where: { text.bytes[$0] == UInt8(ascii: "-") }),
              text.hasPrefix(dash + 1..<name.upperBound, "pod")
        else { return nil }
        var hasKubepods = false
        var wordStart = name.lowerBound
        for i in name.lowerBound...dash where text.bytes[i] == UInt8(ascii: "-") {
            if text.equal(wordStart..<i, "kubepods") { hasKubepods = true }
            wordStart = i + 1
        }
        guard hasKubepods else { return nil }
        return podUID(text, dash + 4..<name.upperBound, separator: UInt8(ascii: "_"))
    }

    /// A pod UID in lowercase hex, either 8-4-4-4-12 with `separator` between the
    /// groups (returned with dashes) or 32 digits without separators (the static
    /// pod form, returned as it is).
    private static func podUID(_ text: CgroupText, _ r: Range<Int>, separator: UInt8) -> String? {
        switch r.count {
        case 32:
            return text.isLowerHex(r) ? text.string(r) : nil
        case 36:
            for (offset, c) in text.bytes[r].enumerated() {
                let valid = offset == 8 || offset == 13 || offset == 18 || offset == 23
                    ? c == separator : ContainerIdentity.isLowerHex(c)
                guard valid else { return nil }
            }
            return String(unsafeUninitializedCapacity: 36, initializingUTF8With: { out in
                for (offset, c) in text.bytes[r].enumerated() { out[offset] = c == separator ? UInt8(ascii: "-") : c }
                return 36
            })
        default:
            return nil
        }
    }
}
