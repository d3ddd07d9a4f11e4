import StrictJSON
import Synchronization

/// The demo server's data: a few text files and a `notes` table, in memory.
final class DemoStore: Sendable {
    private let files = Mutex<[String: String]>([
        "readme.txt": "Welcome to the mcpgw demo. Everything here lives in memory.",
        "notes/todo.txt": "1. try a denied call\n2. read the audit log",
    ])
    private let notes: [(Int, String)] = [(1, "gateways decide"), (2, "servers execute"), (3, "audits remember")]

    /// Runs tool `name`; a tool error is a result with `isError: true`, as MCP wants.
    func call(_ name: String, _ arguments: JSONObject) -> (text: String, isError: Bool) {
        func argument(_ key: String) -> String? { arguments[key]?.stringValue }
        switch name {
        case "list_files":
            return (files.withLock { $0.keys.sorted().joined(separator: "\n") }, false)
        case "read_file":
            guard let path = argument("path") else { return ("read_file needs a string 'path'", true) }
            guard let content = files.withLock({ $0[path] }) else { return ("no such file: \(path)", true) }
            return (content, false)
        case "write_file":
            guard let path = argument("path"), let content = argument("content") else {
                return ("write_file needs 'path' and 'content'", true)
            }
            files.withLock { $0[path] = content }
            return ("wrote \(content.utf8.count) bytes to \(path)", false)
        case "delete_file":
            guard let path = argument("path") else { return ("delete_file needs a string 'path'", true) }
            return files.withLock { $0.removeValue(forKey: path) } == nil ? ("no such file: \(path)", true) : ("deleted \(path)", false)
        case "exec_sql":
            guard let query = argument("query")?.lowercased() else { return ("exec_sql needs a string 'query'", true) }
            guard query.hasPrefix("select") && query.contains("from notes") else {
                return ("the demo database only answers SELECT … FROM notes", true)
            }
            return (notes.map { "\($0.0)\t\($0.1)" }.joined(separator: "\n"), false)
        default:
            return ("unknown tool \(name)", true)
        }
    }

    /// The `tools/list` entries.
    static let tools: [JSONValue] = [
        tool("read_file", "Read a file", ["path": "string"], required: ["path"]),
        tool("write_file", "Write a file", ["path": "string", "content": "string"], required: ["path", "content"]),
        tool("list_files", "List files", [:], required: []),
        tool("delete_file", "Delete a file", ["path": "string"], required: ["path"]),
        tool("exec_sql", "Run SQL against the notes table", ["query": "string"], required: ["query"]),
    ]

    private static func tool(_ name: String, _ description: String, _ properties: [String: String], required: [String]) -> JSONValue {
        .object(
            JSONObject([
                .init(key: "name", value: .string(name)),
                .init(key: "description", value: .string(description)),
                .init(
                    key: "inputSchema",
                    value: .object(
                        JSONObject([
                            .init(key: "type", value: .string("object")),
                            .init(
                                key: "properties",
                                value: .object(
                                    JSONObject(
                                        properties.sorted { $0.key < $1.key }.map {
                                            .init(key: $0.key, value: .object(JSONObject([.init(key: "type", value: .string($0.value))])))
                                        }))),
                            .init(key: "required", value: .array(required.map(JSONValue.string))),
                        ]))),
            ]))
    }
}
