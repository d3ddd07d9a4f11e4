import Foundation
import Identity
import StrictJSON

/// The ordinary build's replay tool (see main.swift): `--list`, `--json-verdicts FILE...`, `--jwt-verdicts FILE`,
/// and `TARGET FILE|DIRECTORY...`.
enum Replay {
    /// Runs the command line; exits with 0, or 2 on a usage error.
    static func run(_ commandLine: [String]) {
        let arguments = Array(commandLine.dropFirst())
        if arguments == ["--list"] {
            for name in FuzzTargets.all.keys.sorted() { print(name) }
            exit(0)
        }
        if arguments.first == "--json-verdicts" {
            // For differential testing against other JSON readers: one line per file, `accept <StrictJSON's serialisation>`
            // or `reject`.
            for path in arguments.dropFirst() {
                let bytes = Array(FileManager.default.contents(atPath: path) ?? Data())
                if let value = try? JSONParser.parse(bytes, limits: JSONLimits(maximumDepth: 64, maximumBytes: 1 << 20)) {
                    print("accept " + value.serialized)
                } else {
                    print("reject")
                }
            }
            exit(0)
        }
        if arguments.first == "--jwt-verdicts", arguments.count == 2 {
            // For differential testing against PyJWT: one token per line of the file, verified by the development
            // configuration now; one line per token, `accept TENANT AGENT` or `reject CODE`.
            let text = String(decoding: FileManager.default.contents(atPath: arguments[1]) ?? Data(), as: UTF8.self)
            let authenticator = FuzzTargets.Shared.authenticator
            // Split on the newline byte: Swift's Character view would join a token's last CR with its LF.
            for line in Array(text.utf8).split(separator: 0x0A, omittingEmptySubsequences: false).dropLast() {
                let token = String(decoding: line, as: UTF8.self)
                do {
                    let principal = try authenticator.authenticate(certificate: nil, bearerToken: token, now: Date())
                    print("accept \(principal.tenant) \(principal.agent)")
                } catch {
                    print("reject \(error.code)")
                }
            }
            exit(0)
        }
        guard let name = arguments.first, let target = FuzzTargets.all[name] else {
            FileHandle.standardError.write(Data("usage: mcpgw-fuzz --list | mcpgw-fuzz TARGET FILE...\n".utf8))
            exit(2)
        }
        var count = 0
        for path in arguments.dropFirst() {
            var isDirectory: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
            let files =
                isDirectory.boolValue
                ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { path + "/" + $0 } : [path]
            for file in files {
                guard let data = FileManager.default.contents(atPath: file) else { continue }
                data.withUnsafeBytes { target($0) }
                count += 1
            }
        }
        print("\(name): \(count) inputs ran")
    }
}
