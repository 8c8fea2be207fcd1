import ArgumentParser
import FerretComponents
import FerretCore
import Foundation
import Logging

struct Plugins: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List plugins: name, version, ABI, kind, library path and status.")

    @OptionGroup var options: ConfigOption

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        let config: AgentConfig
        do {
            config = try AgentConfig.load(path: options.config, components: FerretComponents.all)
        } catch {
            report(error)
            throw ExitCode(1)
        }
        let records = PluginRegistry(logger: Logger(label: "ferret")).load(paths: config.pluginPaths)
        if json {
            var out = "["
            for (i, r) in records.enumerated() {
                if i > 0 { out += "," }
                let p = r.plugin
                out += "\n  {\"name\":"
                JSONText.appendString(r.name, to: &out)
                out += ",\"version\":" + (p.map { "\"\($0.version)\"" } ?? "null")
                out += ",\"abi\":" + (p.map { "\"\($0.abiMajor).\($0.abiMinor)\"" } ?? "null")
                out += ",\"kind\":\"\(r.kind)\",\"mode\":" + (p.map { "\"\($0.mode)\"" } ?? "null")
                out += ",\"manifest\":"
                JSONText.appendString(r.manifestPath, to: &out)
                out += ",\"library\":"
                if let l = r.libraryPath { JSONText.appendString(l, to: &out) } else { out += "null" }
                out += ",\"status\":"
                JSONText.appendString(p != nil ? "loaded" : (r.error ?? "unknown"), to: &out)
                out += "}"
            }
            print(out + "\n]")
            return
        }
        print(pad("NAME", 16) + pad("VERSION", 10) + pad("ABI", 6) + pad("KIND", 11) + pad("MODE", 6) + pad("STATUS", 8) + "LIBRARY / REASON")
        for r in records {
            if let p = r.plugin {
                print(pad(r.name, 16) + pad(p.version, 10) + pad("\(p.abiMajor).\(p.abiMinor)", 6) + pad(r.kind, 11) + pad(p.mode, 6) + pad("loaded", 8) + p.libraryPath)
            } else {
                print(pad(r.name.isEmpty ? "?" : r.name, 16) + pad("-", 10) + pad("-", 6) + pad(r.kind.isEmpty ? "-" : r.kind, 11) + pad("-", 6) + pad("failed", 8) + (r.error ?? ""))
            }
        }
    }
}
