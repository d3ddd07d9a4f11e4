import StrictJSON
import Synchronization

/// What each tenant's tools mirror into `Mcp-Param-*` headers, learned from their `inputSchema` as `tools/list`
/// results pass through (an `x-mcp-header` annotation on a property, reached through `properties` only), so that a
/// `tools/call` whose header disagrees with its arguments is refused like an `Mcp-Name` that disagrees with the body.
/// Bounded: at most `maximumTools` tools per tenant are remembered (the oldest are forgotten first), each with at most
/// `maximumMirrorsPerTool` mirrors whose names and paths are short (`maximumNameBytes`); a tool whose schema goes
/// beyond that (which no real tool does: they mirror a few arguments) is not remembered, like a tool not yet seen, so
/// an upstream cannot make the gateway keep unbounded memory or make each call's check costly.
public final class ToolHeaderSchemas: Sendable {
    /// One mirrored argument: its path of property names, and the header name's suffix.
    struct Mirror: Sendable, Equatable {
        let path: [String]
        let token: String
    }

    /// Tools remembered per tenant.
    static let maximumTools = 10_000
    /// Mirrored arguments remembered per tool.
    static let maximumMirrorsPerTool = 64
    /// Longest header token and property name (bytes) of a mirror, and deepest path.
    static let maximumNameBytes = 128

    private let tenants = Mutex<[String: [String: [Mirror]]]>([:])

    /// A store that knows no tool yet.
    public init() {}

    /// Remembers what `tool` of `tenant` mirrors (forgets it when it mirrors nothing).
    func learn(tenant: String, tool: String, inputSchema: JSONValue?) {
        let mirrors = Self.mirrors(in: inputSchema)
        // Changed in place: copying a tenant's table of up to 10,000 tools for every tool learned made a list's learning
        // cost tools × tools.
        tenants.withLock { tenants in
            if mirrors.isEmpty {
                guard tenants[tenant]?[tool] != nil else { return }
                tenants[tenant]![tool] = nil
                if tenants[tenant]!.isEmpty { tenants[tenant] = nil }
            } else {
                if let count = tenants[tenant]?.count, count >= Self.maximumTools, tenants[tenant]![tool] == nil,
                    let any = tenants[tenant]!.keys.first
                {
                    tenants[tenant]![any] = nil
                }
                tenants[tenant, default: [:]][tool] = mirrors
            }
        }
    }

    /// Why the `Mcp-Param-*` headers of a call of `tool` disagree with its `arguments`, or nil when they agree (or the
    /// tool's schema is not known). `headers` are the request's (each `Mcp-Param-*` appears at most once: checked
    /// before); they are read once, so the check is linear in the headers and the mirrors.
    func mismatch(
        tenant: String, tool: String, arguments: JSONValue?, headers: some Sequence<(name: String, value: String)>
    )
        -> String?
    {
        guard let mirrors = tenants.withLock({ $0[tenant]?[tool] }) else { return nil }
        var sentByToken: [String: String] = [:]
        for (name, value) in headers where MCPHeaderValue.isParamHeader(name) {
            sentByToken[String(name.dropFirst("mcp-param-".count)).lowercased()] = value
        }
        for mirror in mirrors {
            let name = "Mcp-Param-\(mirror.token)"
            let expected = Self.rendered(Self.value(at: mirror.path, in: arguments))
            let sent = sentByToken[mirror.token.lowercased()].map { MCPHeaderValue.decode($0) }
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

    /// Properties annotated with `x-mcp-header`, reached from the schema's root through `properties` only; empty when
    /// there are none or more than the bounds allow (then the tool is not remembered).
    static func mirrors(in schema: JSONValue?) -> [Mirror] {
        var found: [Mirror] = []
        var withinBounds = true
        func walk(_ node: JSONValue?, path: [String], depth: Int) {
            guard withinBounds, depth < 16, let properties = node?.objectValue?["properties"]?.objectValue else { return }
            for member in properties.members where withinBounds {
                let here = path + [member.key]
                if let token = member.value.objectValue?["x-mcp-header"]?.stringValue, !token.isEmpty {
                    guard found.count < maximumMirrorsPerTool, token.utf8.count <= maximumNameBytes,
                        here.allSatisfy({ $0.utf8.count <= maximumNameBytes })
                    else {
                        withinBounds = false
                        return
                    }
                    found.append(Mirror(path: here, token: token))
                }
                walk(member.value, path: here, depth: depth + 1)
            }
        }
        walk(schema, path: [], depth: 0)
        return withinBounds ? found : []
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
