import FerretCore
import FerretHTTPServer
import Pprof

/// A CPU profile as the dashboard's hotspots page shows it (issue #9): the top
/// functions by self and total samples, and the flame graph's tree (callers
/// above callees, children sorted by name, as flame graphs draw them).
struct ProfileView {
    struct Function {
        var name: String
        var flat: Int64
        var cumulative: Int64
    }

    final class Node {
        let name: String
        var value: Int64 = 0
        var children: [String: Node] = [:]
        init(_ name: String) { self.name = name }

        func child(_ name: String) -> Node {
            if let c = children[name] { return c }
            let c = Node(name)
            children[name] = c
            return c
        }
    }

    let total: Int64
    let functions: [Function]
    let root = Node("all")

    init(gzipped: [UInt8]) throws {
        let stacks = PprofFile.stacks(try PprofFile.decode(gzipped))
        var flat: [String: Int64] = [:]
        var cumulative: [String: Int64] = [:]
        var total: Int64 = 0
        var seen = Set<String>()
        for s in stacks {
            total += s.value
            if let leaf = s.frames.last { flat[leaf, default: 0] += s.value }
            seen.removeAll(keepingCapacity: true)
            for f in s.frames where seen.insert(f).inserted { cumulative[f, default: 0] += s.value }
            var node = root
            node.value += s.value
            for f in s.frames {
                node = node.child(f)
                node.value += s.value
            }
        }
        self.total = total
        functions = cumulative.map { Function(name: $0.key, flat: flat[$0.key] ?? 0, cumulative: $0.value) }
            .sorted { $0.flat != $1.flat ? $0.flat > $1.flat : ($0.cumulative != $1.cumulative ? $0.cumulative > $1.cumulative : $0.name < $1.name) }
    }

    /// `{"total","functions":[{"name","flat","cumulative"}],"flame":{"n","v","c":[…]}}`:
    /// the `limit` functions with the most self samples, and the tree without
    /// the nodes under `minShare` of the total (too narrow to draw).
    func write(_ w: inout JSONWriter, limit: Int, minShare: Double = 0.001) {
        w.raw("{\"total\":"); w.int(total)
        w.key("functions")
        w.array(functions.prefix(limit)) { w, f in
            w.raw("{\"name\":"); w.string(f.name)
            w.key("flat"); w.int(f.flat)
            w.key("cumulative"); w.int(f.cumulative)
            w.byte(UInt8(ascii: "}"))
        }
        w.key("flame")
        let floor = Int64((Double(total) * minShare).rounded(.up))
        func node(_ n: Node, _ w: inout JSONWriter) {
            w.raw("{\"n\":"); w.string(n.name)
            w.key("v"); w.int(n.value)
            let kids = n.children.values.filter { $0.value >= max(floor, 1) }.sorted { $0.name < $1.name }
            if !kids.isEmpty {
                w.key("c")
                w.array(kids) { w, k in node(k, &w) }
            }
            w.byte(UInt8(ascii: "}"))
        }
        node(root, &w)
        w.byte(UInt8(ascii: "}"))
    }
}
