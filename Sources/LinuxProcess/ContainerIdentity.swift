/// The container and Kubernetes pod a process runs in, as its cgroup path names them.
///
/// Container runtimes and the kubelet name the cgroup of every container (and of
/// every pod) after its id, so /proc/PID/cgroup tells which container a process
/// belongs to without asking a runtime: no socket, no API call, nothing to
/// configure. Only the layouts of known runtimes are recognised, component by
/// component, so an unrelated cgroup that merely holds a long hex name gives no
/// identity.
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
    /// The cgroup path the identity was read from, as /proc/PID/cgroup wrote it.
    public var cgroupPath: String

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
    public static func parse(cgroupFile text: String) -> ContainerIdentity? {
        var unified: (path: Substring, match: PathMatch)?
        var firstV1: (path: Substring, match: PathMatch)?
        var firstV1WithID: (path: Substring, match: PathMatch)?
        var rest = text[...]
        while !rest.isEmpty {
            let end = rest.utf8.firstIndex(of: UInt8(ascii: "\n")) ?? rest.endIndex
            let line = rest[..<end]
            rest = end == rest.endIndex ? rest[end...] : rest[rest.utf8.index(after: end)...]
            guard let (isUnified, path) = fields(of: line), let match = PathMatch(path: path) else { continue }
            if isUnified {
                if unified == nil { unified = (path, match) }
            } else {
                if firstV1 == nil { firstV1 = (path, match) }
                if firstV1WithID == nil && match.containerID != nil { firstV1WithID = (path, match) }
            }
        }
        let chosen: (path: Substring, match: PathMatch)?
        if let u = unified, u.match.containerID != nil {
            chosen = u
        } else {
            chosen = firstV1WithID ?? unified ?? firstV1
        }
        guard let chosen else { return nil }
        return ContainerIdentity(
            containerID: chosen.match.containerID.map(String.init), runtime: chosen.match.runtime,
            podUID: chosen.match.podUID, cgroupPath: String(chosen.path))
    }

    /// Splits a /proc/PID/cgroup line into (is the v2 line, path); nil for a line
    /// that is not `digits:controllers:/path`. The path keeps any colons it holds;
    /// the " (deleted)" the kernel appends for a removed cgroup is dropped.
    private static func fields(of line: Substring) -> (Bool, Substring)? {
        let bytes = line.utf8
        guard let first = bytes.firstIndex(of: UInt8(ascii: ":")) else { return nil }
        let afterFirst = bytes.index(after: first)
        guard let second = bytes[afterFirst...].firstIndex(of: UInt8(ascii: ":")) else { return nil }
        let hierarchy = bytes[..<first]
        guard !hierarchy.isEmpty, hierarchy.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
            return nil
        }
        var path = line[bytes.index(after: second)...]
        if path.hasSuffix(" (deleted)") {
            path = path.dropLast(" (deleted)".count)
        }
        guard path.utf8.first == UInt8(ascii: "/") else { return nil }
        let isUnified = hierarchy.elementsEqual("0".utf8) && afterFirst == second
        return (isUnified, path)
    }

    /// True for exactly 64 lowercase hex digits: the full container id every
    /// runtime here uses.
    static func isContainerID(_ s: Substring.UTF8View) -> Bool {
        s.count == 64 && s.allSatisfy(isLowerHex)
    }

    static func isLowerHex(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "f"))
    }
}

/// What one cgroup path says, read component by component from the root down.
///
/// The innermost container wins (docker-in-docker, a KinD node's containers
/// inside the node's own container), and a pod met below a container starts
/// afresh: the container above it is the node, not the pod's.
private struct PathMatch {
    var containerID: Substring?
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
        let prefix: String
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

    /// nil when no component matches a known layout.
    init?(path: Substring) {
        var parent = Parent.start
        let bytes = path.utf8
        var start = bytes.startIndex
        var i = start
        while true {
            let atEnd = i == bytes.endIndex
            if atEnd || bytes[i] == UInt8(ascii: "/") {
                if start < i { parent = visit(path[start..<i], parent: parent) }
                if atEnd { break }
                start = bytes.index(after: i)
            }
            i = bytes.index(after: i)
        }
        if containerID == nil && runtime == nil && podUID == nil { return nil }
    }

    /// Applies one path component and returns what it is as the next one's parent.
    private mutating func visit(_ component: Substring, parent: Parent) -> Parent {
        let bytes = component.utf8
        switch component {
        // Seen from inside a cgroup namespace, cgroups outside it start with "..":
        // what follows is as good as a path from the top.
        case "..": return .start
        case "docker": return .docker
        case "kubepods", "burstable", "besteffort": return .kubepodsLevel
        case "libpod_parent": return .libpodParent
        default: break
        }
        if ContainerIdentity.isContainerID(bytes) {
            switch parent {
            case .docker: setContainer(component, runtime: "docker")
            case .pod: setContainer(component, runtime: nil)
            default: break
            }
            return .other
        }
        if let uid = Self.cgroupfsPodUID(bytes), parent == .start || parent == .kubepodsLevel {
            setPod(uid)
            return .pod
        }
        if let uid = Self.systemdPodUID(component) {
            setPod(uid)
            return .other
        }
        for scope in Self.scopes {
            guard let id = Self.scopeID(bytes, scope: scope, parent: parent) else { continue }
            if scope.isMonitor { setMonitor(runtime: scope.runtime) } else { setContainer(id, runtime: scope.runtime) }
            break
        }
        return .other
    }

    private mutating func setContainer(_ id: Substring, runtime: String?) {
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
    private static func scopeID(_ bytes: Substring.UTF8View, scope: Scope, parent: Parent) -> Substring? {
        let prefixLength = scope.prefix.utf8.count
        let withScope = prefixLength + 64 + 6
        let bare = prefixLength + 64
        let count = bytes.count
        guard count == withScope || (count == bare && parent == scope.bareParent),
              bytes.starts(with: scope.prefix.utf8)
        else { return nil }
        let idStart = bytes.index(bytes.startIndex, offsetBy: prefixLength)
        let idEnd = bytes.index(idStart, offsetBy: 64)
        if count == withScope && !bytes[idEnd...].elementsEqual(".scope".utf8) { return nil }
        let id = Substring(bytes[idStart..<idEnd])
        return ContainerIdentity.isContainerID(id.utf8) ? id : nil
    }

    /// The UID of the kubelet's cgroupfs pod directory, `pod<uid>` with a dashed
    /// UID (or a static pod's 32 hex digits).
    private static func cgroupfsPodUID(_ bytes: Substring.UTF8View) -> String? {
        guard bytes.starts(with: "pod".utf8) else { return nil }
        return podUID(bytes.dropFirst(3), separator: UInt8(ascii: "-"))
    }

    /// The UID of the systemd driver's pod slice, `…kubepods[-qos]-pod<uid>.slice`
    /// with the UID's dashes written as underscores (a dash is the slice
    /// hierarchy separator in systemd unit names). One of the dash-separated
    /// words before the pod must be "kubepods" (KinD nodes prefix "kubelet-").
    private static func systemdPodUID(_ component: Substring) -> String? {
        guard component.hasSuffix(".slice") else { return nil }
        let name = component.dropLast(6)
        guard let dash = name.utf8.lastIndex(of: UInt8(ascii: "-")) else { return nil }
        let last = name[name.utf8.index(after: dash)...]
        guard last.utf8.starts(with: "pod".utf8),
              name[..<dash].split(separator: "-").contains("kubepods")
        else { return nil }
        return podUID(last.utf8.dropFirst(3), separator: UInt8(ascii: "_"))
    }

    /// A pod UID in lowercase hex, either 8-4-4-4-12 with `separator` between the
    /// groups (returned with dashes) or 32 digits without separators (the static
    /// pod form, returned as it is).
    private static func podUID(_ bytes: Substring.UTF8View, separator: UInt8) -> String? {
        switch bytes.count {
        case 32:
            return bytes.allSatisfy(ContainerIdentity.isLowerHex) ? String(Substring(bytes)) : nil
        case 36:
            var out = [UInt8]()
            out.reserveCapacity(36)
            for (offset, c) in bytes.enumerated() {
                if offset == 8 || offset == 13 || offset == 18 || offset == 23 {
                    guard c == separator else { return nil }
                    out.append(UInt8(ascii: "-"))
                } else {
                    guard ContainerIdentity.isLowerHex(c) else { return nil }
                    out.append(c)
                }
            }
            return String(decoding: out, as: UTF8.self)
        default:
            return nil
        }
    }
}
