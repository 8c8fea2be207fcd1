import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// `ferret status`: what a running agent's dashboard sink sees, from its JSON
/// API (`/api/overview`): each process group with its instances, Go versions,
/// linkage, health and the alerts firing.
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the process groups a running agent monitors (through its dashboard sink's JSON API).")

    @Option(help: "The dashboard sink's address.")
    var url: String = "http://127.0.0.1:9465"

    @Flag(help: "Print the API's JSON as it is.")
    var json = false

    func run() throws {
        let base = url.hasSuffix("/") ? String(url.dropLast()) : url
        guard let endpoint = URL(string: base + "/api/overview") else {
            printError("ferret status: invalid --url '\(url)'")
            throw ExitCode(2)
        }
        let data: Data
        do {
            data = try Self.get(endpoint)
        } catch {
            printError("ferret status: cannot reach the dashboard at \(base): \(error)\n"
                + "(is `ferret run` running with a `dashboard` sink? see Sources/Sinks/Dashboard/README.md)")
            throw ExitCode(1)
        }
        if json {
            print(String(decoding: data, as: UTF8.self))
            return
        }
        guard let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let groups = o["groups"] as? [[String: Any]] else {
            printError("ferret status: \(endpoint) did not answer with the overview JSON")
            throw ExitCode(1)
        }
        func list(_ v: Any?) -> String { (v as? [String]).map { $0.isEmpty ? "-" : $0.joined(separator: ",") } ?? "-" }
        print(pad("GROUP", 24) + pad("RULE", 18) + pad("INSTANCES", 11) + pad("GO", 16) + pad("LINKAGE", 16) + pad("HEALTH", 10) + "ALERTS")
        var firing: [String] = []
        for g in groups {
            let alerts = g["alerts"] as? [[String: Any]] ?? []
            firing += alerts.compactMap { $0["body"] as? String }
            print(pad(g["name"] as? String ?? "?", 24) + pad(g["rule"] as? String ?? "-", 18) + pad("\((g["instances"] as? Int) ?? 0)", 11)
                + pad(list(g["go_versions"]), 16) + pad(list(g["linkage"]), 16) + pad(g["health"] as? String ?? "-", 10) + "\(alerts.count)")
        }
        if groups.isEmpty { print("(no process matched a rule yet)") }
        for a in firing { print("firing: " + a) }
    }

    func printError(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

    /// GET through AsyncHTTPClient (already in the agent for the network
    /// sinks), not URLSession: FoundationNetworking would load libcurl and a
    /// TLS stack into the agent's memory for this one command.
    static func get(_ url: URL) throws -> Data {
        let request = try HTTPClient.Request(url: url.absoluteString, method: .GET)
        let response = try HTTPClient.shared.execute(request: request, deadline: .now() + .seconds(5)).wait()
        guard response.status == .ok else { throw StatusError(description: "HTTP \(response.status.code) from \(url)") }
        return response.body.map { Data($0.readableBytesView) } ?? Data()
    }

    struct StatusError: Error, CustomStringConvertible {
        var description: String
    }
}
