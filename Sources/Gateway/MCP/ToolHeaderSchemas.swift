import StrictJSON
import Synchronization

/// What each tenant's tools mirror into `Mcp-Param-*` headers, learned from their `inputSchema` as `tools/list`
/// results pass through (an `x-mcp-header` annotation on a property, reached through `properties` only), so that a
/// `tools/call` whose header disagrees with its arguments is refused like an `Mcp-Name` that disagrees with the body.
/// Bounded: at most `maximumTools` tools per tenant are remembered (the oldest are forgotten first).
public final class ToolHeaderSchemas: Sendable {
    /// One mirrored argument: its path of property names, and the header name's suffix.
    struct Mirror: Sendable, Equatable {
        let path: [String]
        let token: String
    }

    /// Tools remembered per tenant.
    static let maximumTools = 10_000

    private let tenants = Mutex<[String: [String: [Mirror]]]>([:])

    /// A store that knows no tool yet.
    public init() {}

    /// Remembers what `tool` of `tenant` mirrors (forgets it when it mirrors nothing).
    func learn(tenant: String, tool: String, inputSchema: JSONValue?) {
        let mirrors = Self.mirrors(in: inputSchema)
        tenants.withLock { tenants in
            var tools = tenants[tenant, default: [:]]
            if mirrors.isEmpty {
                tools[tool] = nil
            } else {
                if tools.count >= Self.maximumTools, tools[tool] == nil, let any = tools.keys.first { tools[any] = nil }
                tools[tool] = mirrors
            }
            tenants[tenant] = tools.isEmpty ? nil : tools
        }
    }

    /// Why the `Mcp-Param-*` headers of a call of `tool` disagree with its `arguments`, or nil when they agree (or the
    /// tool's schema is not known). `header(name)` reads a request header, case-insensitively.
    func mismatch(tenant: String, tool: String, arguments: JSONValue?, header: (String) -> String?) -> String? {
        guard let mirrors = tenants.withLock({ $0[tenant]?[tool] }) else { return nil }
        for mirror in mirrors {
            let name = "Mcp-Param-\(mirror.token)"
            let expected = Self.rendered(Self.value(at: mirror.path, in: arguments))
            let sent = header(name).map { MCPHeaderValue.decode($0) }
            switch (expected, sent) {
            case (nil, nil): continue
            // Compared as bytes: Swift `==` is canonical equivalence (the Kelvin sign would equal a K).
            case (let value?, let header??) where value.utf8.elementsEqual(header.utf8): continue
            case (_?, nil): return "\(name) header is missing for argument \(mirror.path.joined(separator: "."))"
            case (nil, _?): return "\(name) header is sent without its argument \(mirror.path.joined(separator: "."))"
            default: return "\(name) header does not match argument \(mirror.path.joined(separator: "."))"
            }
        }
        return nil
    }

    /// Properties annotated with `x-mcp-header`, reached from the schema's root through `properties` only.
    static func mirrors(in schema: JSONValue?) -> [Mirror] {
        var found: [Mirror] = []
        func walk(_ node: JSONValue?, path: [String], depth: Int) {
            guard depth < 16, let properties = node?.objectValue?["properties"]?.objectValue else { return }
            for member in properties.members {
                let here = path + [member.key]
                if let token = member.value.objectValue?["x-mcp-header"]?.stringValue, !token.isEmpty {
                    found.append(Mirror(path: here, token: token))
                }
                walk(member.value, path: here, depth: depth + 1)
            }
        }
        walk(schema, path: [], depth: 0)
        return found
    }

    private static func value(at path: [String], in arguments: JSONValue?) -> JSONValue? {
        var node = arguments
        for key in path { node = node?.objectValue?[key] }
        return node
    }

    /// How a client mirrors a value into a header: strings as they are, booleans as `true`/`false`, numbers as their
    /// literal; nothing for null, objects and arrays.
    private static func rendered(_ value: JSONValue?) -> String? {
        switch value {
        case .string(let text)?: text
        case .bool(let flag)?: flag ? "true" : "false"
        case .number(let number)?: number.literal
        default: nil
        }
    }
}
