import StrictJSON

extension PolicyDocument {
    static let documentKeys: Set<String> = ["name", "description", "default_action", "rules", "rate_limits"]
    static let ruleKeys: Set<String> = [
        "id", "description", "action", "tools", "agents", "arg_deny", "args", "methods", "resources", "prompts", "scopes",
        "log_arguments", "nested_json", "call_timeout_seconds",
    ]
    static let argumentKeys: Set<String> = [
        "deny", "allow", "path", "max_length", "min_length", "max_bytes", "type", "detectors", "required", "read_only_sql",
        "sql_dialects",
    ]
    static let pathKeys: Set<String> = ["allowed_prefixes", "allow_absolute", "allow_traversal"]
    static let rateLimitKeys: Set<String> = ["id", "description", "methods", "tools", "agents", "rate_per_second", "burst", "per", "scope"]
    static let toolsCallOnly = ["tools/call"]
    static let jsonTypes: Set<String> = ["string", "number", "boolean", "array", "object", "null"]

    /// Parses one policy file. Unknown keys, unknown actions, malformed patterns and invalid regular expressions
    /// are errors naming the file, the rule id and the field.
    public static func parse(_ bytes: [UInt8], file: String, defaultName: String) throws(PolicyLoadError) -> PolicyDocument {
        let root: JSONObjectReader
        do {
            root = try JSONObjectReader(try JSONParser.parse(bytes, limits: JSONLimits(maximumDepth: 32, maximumBytes: 16 * 1024 * 1024)))
        } catch let error as JSONParseError {
            throw PolicyLoadError(file: file, reason: "not valid JSON: \(error)")
        } catch {
            throw PolicyLoadError(file: file, reason: "\(error)")
        }
        do {
            try root.requireOnlyKeys(documentKeys)
            let name = try root.string("name") ?? defaultName
            let defaultAction = try action(root, "default_action") ?? .deny
            var rules: [PolicyRule] = []
            var ids = Set<String>()
            for reader in try root.objects("rules") ?? [] {
                let rule = try parseRule(reader, document: name, file: file)
                guard ids.insert(rule.id).inserted else {
                    throw PolicyLoadError(file: file, rule: rule.id, field: reader.fieldPath("id"), reason: "duplicate rule id")
                }
                rules.append(rule)
            }
            var limits: [RateLimitRule] = []
            for reader in try root.objects("rate_limits") ?? [] {
                let limit = try parseRateLimit(reader, document: name, file: file)
                guard ids.insert(limit.id).inserted else {
                    throw PolicyLoadError(file: file, rule: limit.id, field: reader.fieldPath("id"), reason: "duplicate id")
                }
                limits.append(limit)
            }
            return PolicyDocument(
                name: name, description: try root.string("description"), defaultAction: defaultAction, rules: rules,
                rateLimits: limits, file: file)
        } catch let error as PolicyLoadError {
            throw error
        } catch let error as JSONFieldError {
            throw PolicyLoadError(file: file, field: error.path, reason: error.reason)
        } catch {
            throw PolicyLoadError(file: file, reason: "\(error)")
        }
    }

    private static func action(_ reader: JSONObjectReader, _ key: String) throws -> PolicyAction? {
        guard let text = try reader.string(key) else { return nil }
        guard let action = PolicyAction(rawValue: text) else {
            throw JSONFieldError(path: reader.fieldPath(key), reason: "unknown action '\(text)' (allow, deny or audit)")
        }
        return action
    }

    private static func patterns(_ reader: JSONObjectReader, _ key: String) throws -> [NamePattern] {
        guard let texts = try reader.strings(key) else { return [] }
        guard !texts.isEmpty else {
            throw JSONFieldError(path: reader.fieldPath(key), reason: "must not be empty (omit it to match everything)")
        }
        return try texts.enumerated().map { position, text in
            guard let pattern = NamePattern(text) else {
                throw JSONFieldError(path: "\(reader.fieldPath(key))[\(position)]", reason: "malformed pattern '\(text)'")
            }
            return pattern
        }
    }

    private static func parseRule(_ reader: JSONObjectReader, document: String, file: String) throws -> PolicyRule {
        let id = try reader.string("id") ?? ""
        func fail(_ field: String, _ reason: String) -> PolicyLoadError {
            PolicyLoadError(file: file, rule: id.isEmpty ? reader.path : id, field: reader.fieldPath(field), reason: reason)
        }
        do {
            try reader.requireOnlyKeys(ruleKeys)
            guard !id.isEmpty else { throw fail("id", "every rule needs an id") }
            guard let action = try action(reader, "action") else { throw fail("action", "is required (allow, deny or audit)") }
            let tools = try patterns(reader, "tools")
            let resources = try patterns(reader, "resources")
            let prompts = try patterns(reader, "prompts")
            var methods = try reader.strings("methods") ?? []
            // A rule on a method the gateway never decides would never apply (found by review: a deny rule on
            // tools/list loaded, and the list was served).
            for (position, method) in methods.enumerated() {
                if let problem = PolicyMethods.neverDecidedProblem(method) { throw fail("methods[\(position)]", problem) }
            }
            if methods.isEmpty {
                guard !tools.isEmpty || !resources.isEmpty || !prompts.isEmpty else {
                    throw fail("tools", "a rule names tools, resources, prompts or methods")
                }
                if !tools.isEmpty { methods.append("tools/call") }
                if !resources.isEmpty { methods.append("resources/read") }
                if !prompts.isEmpty { methods.append("prompts/get") }
            }
            for (list, method, key) in [
                (tools, "tools/call", "tools"), (resources, "resources/read", "resources"), (prompts, "prompts/get", "prompts"),
            ]
            where !list.isEmpty && !methods.contains(method) {
                throw fail(key, "'\(key)' needs '\(method)' among the rule's methods")
            }
            // Found by review: `methods: [tools/call, prompts/get], tools: [safe_tool]` reads as narrowing both, and
            // applied to every prompt. Once a rule names targets for one of its methods, it must for each.
            let named = [(tools, "tools/call", "tools"), (resources, "resources/read", "resources"), (prompts, "prompts/get", "prompts")]
            if named.contains(where: { !$0.0.isEmpty }) {
                for (list, method, key) in named where list.isEmpty && methods.contains(method) {
                    throw fail(
                        key,
                        "the rule lists '\(method)' but no '\(key)', while it names targets of its other methods: it would apply to every one; give '\(key)' (\"*\" for all) or put '\(method)' in a rule of its own"
                    )
                }
                // …and a method that takes no targets (`completion/complete`, `tasks/get`) would be governed whole
                // (found by the review of the first version).
                for (position, method) in methods.enumerated() where !named.contains(where: { $0.1 == method }) {
                    throw fail(
                        "methods[\(position)]",
                        "'\(method)' takes no tools, resources or prompts, and this rule names some: it would govern every \(method); put it in a rule of its own"
                    )
                }
            }
            let scopes = try reader.strings("scopes") ?? []
            if !scopes.isEmpty && action == .deny { throw fail("scopes", "scopes belong on allow or audit rules") }
            var constraints: [ArgumentConstraint] = []
            if let argDeny = try reader.object("arg_deny") {
                for member in argDeny.object.members {
                    guard member.key.utf8.count <= ArgumentCanonicalizer.maximumArgumentNameBytes else {
                        throw fail("arg_deny", "argument names are at most \(ArgumentCanonicalizer.maximumArgumentNameBytes) bytes")
                    }
                    var constraint = ArgumentConstraint(key: member.key == "*" ? "*" : ArgumentCanonicalizer.foldKey(member.key))
                    switch member.value {
                    case .string(let text) where !text.isEmpty: constraint.denyTokens = [text.lowercased()]
                    case .array(let items) where !items.isEmpty && items.allSatisfy({ !($0.stringValue ?? "").isEmpty }):
                        constraint.denyTokens = items.compactMap { $0.stringValue?.lowercased() }
                    default: throw fail("arg_deny.\(member.key)", "must be a non-empty string or array of strings")
                    }
                    constraints.append(constraint)
                }
            }
            if let args = try reader.object("args") {
                for (key, argument) in try args.objectMembers() {
                    constraints.append(try parseArgument(argument, key: key))
                }
            }
            if methods == toolsCallOnly { methods = toolsCallOnly }  // share one array among the many tool-only rules
            return PolicyRule(
                id: id, description: try reader.string("description"), action: action, methods: methods, tools: tools,
                resources: resources, prompts: prompts, agents: try patterns(reader, "agents"), scopes: scopes,
                constraints: constraints, logArguments: try reader.bool("log_arguments") ?? false,
                inspectsNestedJSON: try reader.bool("nested_json") ?? true, callTimeoutSeconds: try callTimeout(reader, action),
                document: document, file: file)
        } catch let error as PolicyLoadError {
            throw error
        } catch let error as JSONFieldError {
            throw PolicyLoadError(file: file, rule: id.isEmpty ? nil : id, field: error.path, reason: error.reason)
        } catch let error as RegexError {
            throw PolicyLoadError(file: file, rule: id.isEmpty ? nil : id, field: reader.fieldPath("args"), reason: "\(error)")
        }
    }

    /// `call_timeout_seconds`: 1 s to 24 h, on allow and audit rules.
    private static func callTimeout(_ reader: JSONObjectReader, _ action: PolicyAction) throws -> Int? {
        guard let seconds = try reader.int("call_timeout_seconds") else { return nil }
        guard (1...86_400).contains(seconds) else {
            throw JSONFieldError(path: reader.fieldPath("call_timeout_seconds"), reason: "must be 1 to 86400 seconds")
        }
        guard action != .deny else {
            throw JSONFieldError(path: reader.fieldPath("call_timeout_seconds"), reason: "belongs on allow or audit rules")
        }
        return seconds
    }

    private static func parseArgument(_ reader: JSONObjectReader, key: String) throws -> ArgumentConstraint {
        try reader.requireOnlyKeys(argumentKeys)
        guard key.utf8.count <= ArgumentCanonicalizer.maximumArgumentNameBytes else {
            throw JSONFieldError(
                path: reader.path, reason: "argument names are at most \(ArgumentCanonicalizer.maximumArgumentNameBytes) bytes")
        }
        var constraint = ArgumentConstraint(key: key == "*" ? "*" : ArgumentCanonicalizer.foldKey(key))
        func regexes(_ field: String) throws -> [LinearRegex] {
            try (try reader.strings(field) ?? []).enumerated().map { position, text in
                do {
                    return try LinearRegex(text)
                } catch {
                    throw JSONFieldError(path: "\(reader.fieldPath(field))[\(position)]", reason: "\(error)")
                }
            }
        }
        constraint.denyPatterns = try regexes("deny")
        constraint.allowPatterns = try regexes("allow")
        if let path = try reader.object("path") {
            try path.requireOnlyKeys(pathKeys)
            let rule = ArgumentConstraint.PathRule(
                allowedPrefixes: try path.strings("allowed_prefixes") ?? [], allowAbsolute: try path.bool("allow_absolute") ?? false,
                allowTraversal: try path.bool("allow_traversal") ?? false)
            for (position, prefix) in rule.allowedPrefixes.enumerated() {
                if let problem = prefixProblem(prefix, rule) {
                    throw JSONFieldError(path: "\(path.fieldPath("allowed_prefixes"))[\(position)]", reason: problem)
                }
            }
            constraint.path = rule
        }
        if let length = try reader.int("max_length") {
            guard length > 0 else { throw JSONFieldError(path: reader.fieldPath("max_length"), reason: "must be positive") }
            constraint.maximumLength = length
        }
        if let length = try reader.int("min_length") {
            guard length >= 0 else { throw JSONFieldError(path: reader.fieldPath("min_length"), reason: "must not be negative") }
            constraint.minimumLength = length
        }
        if let bytes = try reader.int("max_bytes") {
            guard bytes > 0 else { throw JSONFieldError(path: reader.fieldPath("max_bytes"), reason: "must be positive") }
            constraint.maximumBytes = bytes
        }
        constraint.readOnlySQL = try reader.bool("read_only_sql") ?? false
        if let type = try reader.string("type") {
            guard jsonTypes.contains(type) else {
                throw JSONFieldError(path: reader.fieldPath("type"), reason: "must be one of \(jsonTypes.sorted())")
            }
            guard key != "*" else { throw JSONFieldError(path: reader.fieldPath("type"), reason: "needs a named argument, not '*'") }
            constraint.type = type
        }
        constraint.detectors = try (try reader.strings("detectors") ?? []).enumerated().map { position, name in
            guard let detector = Detector(rawValue: name) else {
                throw JSONFieldError(
                    path: "\(reader.fieldPath("detectors"))[\(position)]",
                    reason: "unknown detector '\(name)' (\(Detector.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return detector
        }
        if let names = try reader.strings("sql_dialects") {
            let field = reader.fieldPath("sql_dialects")
            var dialects: [SQLDialect] = []
            for (position, name) in names.enumerated() {
                guard let dialect = SQLDialect(rawValue: name) else {
                    throw JSONFieldError(
                        path: "\(field)[\(position)]",
                        reason: "unknown SQL dialect '\(name)' (\(SQLDialect.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                if !dialects.contains(dialect) { dialects.append(dialect) }
            }
            guard !dialects.isEmpty else {
                throw JSONFieldError(path: field, reason: "names no database: leave it out to read SQL as every database does")
            }
            // A setting that changes nothing would let an author believe a check is narrowed (or applied) where it is not.
            guard constraint.readOnlySQL || constraint.detectors.contains(.sqlInjection) else {
                throw JSONFieldError(
                    path: field, reason: "applies to read_only_sql and the sql_injection detector, and this argument has neither")
            }
            constraint.sqlDialects = dialects
        }
        constraint.required = try reader.bool("required") ?? false
        if constraint.required && key == "*" {
            throw JSONFieldError(path: reader.fieldPath("required"), reason: "needs a named argument, not '*'")
        }
        // A constraint that checks nothing is never violated: on a deny rule, the rule would never apply (found by
        // review: `"args": {"cmd": {}}` loaded and denied nothing).
        guard
            !constraint.denyPatterns.isEmpty || !constraint.allowPatterns.isEmpty || constraint.path != nil
                || constraint.maximumLength != nil || constraint.minimumLength != nil || constraint.maximumBytes != nil
                || constraint.readOnlySQL || constraint.type != nil || !constraint.detectors.isEmpty || constraint.required
        else {
            throw JSONFieldError(
                path: reader.path,
                reason: "checks nothing: give at least one of \(argumentKeys.sorted().joined(separator: ", ")) (with a non-empty list)")
        }
        return constraint
    }

    /// Why `prefix` of `rule` can never admit a value, or nil: values are compared once canonical and normalised
    /// (found by review: `/srv/data` without `allow_absolute`, and `./docs`, loaded and admitted nothing).
    static func prefixProblem(_ prefix: String, _ rule: ArgumentConstraint.PathRule) -> String? {
        guard !prefix.isEmpty else { return "is empty" }
        let canonical = ArgumentCanonicalizer.forms(of: prefix).last ?? prefix
        // Byte for byte: values are held to prefixes so (a Kelvin sign is not a `K` to a POSIX file system), and `==` on
        // strings would take a non-NFC prefix for its canonical form (found by review: it loaded and admitted nothing).
        guard canonical.utf8.elementsEqual(prefix.utf8) else {
            return "'\(prefix)' is compared with canonical values, and is not one: write it as '\(canonical)'"
        }
        if PathText(prefix).isAbsolute && !rule.allowAbsolute {
            return "'\(prefix)' is absolute, and no absolute path is admitted without \"allow_absolute\": true"
        }
        // The prefix, read as a value of this rule, must lie under itself: true exactly when it is written normalised.
        let own = ArgumentConstraint.PathRule(allowedPrefixes: [prefix], allowAbsolute: true, allowTraversal: false)
        if let problem = ArgumentConstraint.scalarPathProblem(prefix, own) {
            return problem == ArgumentConstraint.outsidePrefixes(own)
                ? "'\(prefix)' is compared with normalised paths (no '.', '..' or empty segments), and is not one"
                : "'\(prefix)': \(problem)"
        }
        return nil
    }

    private static func parseRateLimit(_ reader: JSONObjectReader, document: String, file: String) throws -> RateLimitRule {
        let id = try reader.string("id") ?? ""
        do {
            try reader.requireOnlyKeys(rateLimitKeys)
            guard !id.isEmpty else { throw JSONFieldError(path: reader.fieldPath("id"), reason: "every rate limit needs an id") }
            guard let rate = try reader.double("rate_per_second"), rate > 0 else {
                throw JSONFieldError(path: reader.fieldPath("rate_per_second"), reason: "is required and must be positive")
            }
            let burst = try reader.double("burst") ?? max(1, rate)
            guard burst >= 1 else { throw JSONFieldError(path: reader.fieldPath("burst"), reason: "must be at least 1") }
            let scopeText = try reader.string("per") ?? "agent+tool"
            guard let scope = RateLimitRule.Scope(rawValue: scopeText) else {
                throw JSONFieldError(path: reader.fieldPath("per"), reason: "must be tenant, agent, tool or agent+tool")
            }
            var sharing: RateLimitRule.Sharing?
            if let text = try reader.string("scope") {
                guard let parsed = RateLimitRule.Sharing(rawValue: text) else {
                    throw JSONFieldError(path: reader.fieldPath("scope"), reason: "must be global or local")
                }
                sharing = parsed
            }
            let tools = try patterns(reader, "tools")
            let methods = try reader.strings("methods") ?? ["tools/call"]
            // An empty list selects no request: the limit would never count anything (found by review).
            guard !methods.isEmpty else {
                throw JSONFieldError(path: reader.fieldPath("methods"), reason: "is empty: name methods, or leave it out for tools/call")
            }
            for (position, method) in methods.enumerated() {
                if let problem = PolicyMethods.uncountedProblem(method) {
                    throw JSONFieldError(path: "\(reader.fieldPath("methods"))[\(position)]", reason: problem)
                }
            }
            // A plumbing request names no tool: a limit that selects tools would never count it.
            if !tools.isEmpty, let plumbing = methods.first(where: PolicyMethods.isPlumbingRequest) {
                throw JSONFieldError(
                    path: reader.fieldPath("tools"),
                    reason: "selects calls by tool name, and \(plumbing) names no tool: count it in a limit without 'tools'")
            }
            return RateLimitRule(
                id: id, methods: methods, tools: tools, agents: try patterns(reader, "agents"),
                ratePerSecond: rate, burst: burst, scope: scope, document: document, sharing: sharing)
        } catch let error as JSONFieldError {
            throw PolicyLoadError(file: file, rule: id.isEmpty ? nil : id, field: error.path, reason: error.reason)
        }
    }
}
