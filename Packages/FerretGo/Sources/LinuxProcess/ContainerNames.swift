import Foundation
import Glibc

// Human names for a container found by `ContainerIdentity`, read from the files the
// kubelet and Docker keep on the node. Local files only: no runtime socket, no API
// server, no network. The caller decides whether to look (it costs directory
// listings), and every root is a parameter because an agent in a container reads
// the host's files through a mount such as /host/var/log/pods.

/// The namespace, pod and container names of a Kubernetes container, from the
/// kubelet's log directories.
public struct KubeletPodNames: Sendable, Equatable {
    public var namespace: String?
    public var podName: String?
    public var podUID: String?
    public var containerName: String?

    public init(namespace: String? = nil, podName: String? = nil, podUID: String? = nil, containerName: String? = nil) {
        self.namespace = namespace
        self.podName = podName
        self.podUID = podUID
        self.containerName = containerName
    }

    /// The OpenTelemetry resource attributes of the names that are set:
    /// `k8s.namespace.name`, `k8s.pod.name`, `k8s.container.name`. The pod UID is
    /// left out: `ContainerIdentity.attributes` already gives it as `k8s.pod.uid`.
    public var attributes: [(key: String, value: String)] {
        var out: [(key: String, value: String)] = []
        out.reserveCapacity(3)
        if let namespace { out.append((key: "k8s.namespace.name", value: namespace)) }
        if let podName { out.append((key: "k8s.pod.name", value: podName)) }
        if let containerName { out.append((key: "k8s.container.name", value: containerName)) }
        return out
    }

    /// Finds the pod's names in the kubelet's log tree,
    /// `<podLogRoot>/<namespace>_<pod-name>_<pod-uid>/<container-name>/<restart>.log`.
    /// Namespace and pod names are DNS labels and subdomains, which cannot hold
    /// `_`, so the directory name splits unambiguously.
    ///
    /// The container name comes from, in order:
    /// 1. with `containerID`, the file `<pod>_<namespace>_<container>-<containerID>.log`
    ///    the kubelet keeps in `containerLogRoot` for every container: exact;
    /// 2. the pod directory's only container directory, when there is one;
    /// 3. with `containerID`, the container directory holding a log whose name, or
    ///    whose symlink target (the Docker runtime links to its own json log), holds
    ///    the id.
    /// It stays nil when none of these tells. nil when no directory names the pod;
    /// missing or unreadable files are never an error.
    public static func lookup(
        podUID: String, containerID: String?,
        podLogRoot: String = "/var/log/pods", containerLogRoot: String = "/var/log/containers"
    ) -> KubeletPodNames? {
        let files = FileManager.default
        guard !podUID.isEmpty, let entries = try? files.contentsOfDirectory(atPath: podLogRoot) else { return nil }
        let suffix = "_" + podUID
        // A UID names one pod, so there is one such directory; sorting keeps the
        // choice stable should a stale copy linger.
        for entry in entries.filter({ $0.hasSuffix(suffix) }).sorted() {
            let head = entry.dropLast(suffix.count)
            guard let underscore = head.firstIndex(of: "_") else { continue }
            let namespace = head[..<underscore]
            let pod = head[head.index(after: underscore)...]
            let podDirectory = podLogRoot + "/" + entry
            guard !namespace.isEmpty, !pod.isEmpty, isDirectory(podDirectory) else { continue }
            let id = containerID.flatMap { $0.isEmpty ? nil : $0 }
            let container = id.flatMap {
                containerName(inContainerLogs: containerLogRoot, pod: pod, namespace: namespace, containerID: $0)
            } ?? containerName(inPodDirectory: podDirectory, containerID: id)
            return KubeletPodNames(
                namespace: String(namespace), podName: String(pod), podUID: podUID, containerName: container)
        }
        return nil
    }

    /// The `<container>` of `<pod>_<namespace>_<container>-<containerID>.log` in
    /// the kubelet's flat container log directory.
    private static func containerName(
        inContainerLogs root: String, pod: Substring, namespace: Substring, containerID: String
    ) -> String? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: root) else { return nil }
        let prefix = "\(pod)_\(namespace)_"
        let suffix = "-\(containerID).log"
        for entry in entries where entry.count > prefix.count + suffix.count
            && entry.hasPrefix(prefix) && entry.hasSuffix(suffix) {
            let name = entry.dropFirst(prefix.count).dropLast(suffix.count)
            if !name.contains("_") { return String(name) }
        }
        return nil
    }

    /// The pod directory's only container directory, or the one whose logs name
    /// `containerID`.
    private static func containerName(inPodDirectory podDirectory: String, containerID: String?) -> String? {
        let files = FileManager.default
        guard let entries = try? files.contentsOfDirectory(atPath: podDirectory) else { return nil }
        let containers = entries.filter { isDirectory(podDirectory + "/" + $0) }.sorted()
        if containers.count == 1 { return containers[0] }
        guard let containerID else { return nil }
        return containers.first { container in
            let directory = podDirectory + "/" + container
            guard let logs = try? files.contentsOfDirectory(atPath: directory) else { return false }
            return logs.contains { log in
                if log.contains(containerID) { return true }
                let target = try? files.destinationOfSymbolicLink(atPath: directory + "/" + log)
                return target?.contains(containerID) ?? false
            }
        }
    }

    private static func isDirectory(_ path: String) -> Bool {
        var directory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &directory) && directory.boolValue
    }
}

/// The name and image of a Docker container, from the configuration Docker keeps
/// for it, `<root>/<id>/config.v2.json`.
public struct DockerContainerNames: Sendable, Equatable {
    /// The container's name without Docker's leading "/": OTel `container.name`.
    public var name: String?
    /// The image reference without tag or digest, registry and repository
    /// included ("registry.example/team/api"): OTel `container.image.name`.
    public var imageName: String?
    /// The image tag ("1.4.2"); nil when the container was started from an
    /// untagged or digest-only reference. OTel `container.image.tags`.
    public var imageTag: String?

    public init(name: String? = nil, imageName: String? = nil, imageTag: String? = nil) {
        self.name = name
        self.imageName = imageName
        self.imageTag = imageTag
    }

    /// The largest config.v2.json read: real ones are a few KiB, and the bound
    /// keeps a corrupt or hostile file from costing memory.
    public static let configSizeLimit = 4 << 20

    /// The OpenTelemetry resource attributes of the values that are set:
    /// `container.name`, `container.image.name`, `container.image.tags`.
    /// `container.image.tags` is a string array in OTel; the one tag is its value here.
    public var attributes: [(key: String, value: String)] {
        var out: [(key: String, value: String)] = []
        out.reserveCapacity(3)
        if let name { out.append((key: "container.name", value: name)) }
        if let imageName { out.append((key: "container.image.name", value: imageName)) }
        if let imageTag { out.append((key: "container.image.tags", value: imageTag)) }
        return out
    }

    /// Reads `<root>/<containerID>/config.v2.json`. nil when the id is not a full
    /// 64-hex id (it becomes a path component), when the file is missing, larger
    /// than `configSizeLimit` or not valid JSON, or when it names nothing.
    public static func lookup(containerID: String, root: String = "/var/lib/docker/containers") -> DockerContainerNames? {
        guard ContainerIdentity.isContainerID(containerID),
              let data = readBounded(root + "/" + containerID + "/config.v2.json", limit: configSizeLimit)
        else { return nil }
        return parse(configJSON: data)
    }

    /// Reads the names from the contents of a config.v2.json: `Name` and
    /// `Config.Image`. nil when it is not a JSON object or holds neither.
    public static func parse(configJSON data: Data) -> DockerContainerNames? {
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return nil }
        var names = DockerContainerNames()
        if let name = object["Name"] as? String {
            let trimmed = name.hasPrefix("/") ? name.dropFirst() : name[...]
            if !trimmed.isEmpty { names.name = String(trimmed) }
        }
        if let config = object["Config"] as? [String: Any], let image = config["Image"] as? String {
            (names.imageName, names.imageTag) = splitImageReference(image)
        }
        return names == DockerContainerNames() ? nil : names
    }

    /// Splits `[registry[:port]/]repository[:tag][@digest]` into name and tag.
    /// The tag is after the last colon of the last path component, so a registry
    /// port is not taken for a tag. A container started from a bare image id
    /// (`sha256:…`) has no name.
    private static func splitImageReference(_ image: String) -> (name: String?, tag: String?) {
        guard !image.hasPrefix("sha256:") else { return (nil, nil) }
        var reference = image[...]
        if let at = reference.firstIndex(of: "@") { reference = reference[..<at] }
        let lastComponent = reference.lastIndex(of: "/").map { reference.index(after: $0) } ?? reference.startIndex
        var tag: Substring?
        if let colon = reference[lastComponent...].lastIndex(of: ":") {
            tag = reference[reference.index(after: colon)...]
            reference = reference[..<colon]
        }
        return (reference.isEmpty ? nil : String(reference), tag.flatMap { $0.isEmpty ? nil : String($0) })
    }

    /// The whole file when it is at most `limit` bytes; nil when it cannot be read
    /// or is larger.
    private static func readBounded(_ path: String, limit: Int) -> Data? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var data = Data()
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while data.count <= limit {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if n == 0 { return data }
            data.append(contentsOf: chunk[..<n])
        }
        return nil
    }
}
