/// Built-in detectors for hostile argument values.
public enum Detector: String, Sendable, Hashable, CaseIterable {
    /// `..` as a path segment (after decoding and slash folding), or a NUL byte.
    case pathTraversal = "path_traversal"
    /// SQL-injection shapes: tautologies after a quote, stacked statements, UNION SELECT, comments after a quote,
    /// time-based functions.
    case sqlInjection = "sql_injection"
    /// Shell metacharacters: `; | & \` < >`, `$(`, `${`, `$NAME`, newlines, NUL.
    case shellMetacharacters = "shell_metacharacters"

    /// Whether the detector fires on `value` (any of its forms); the returned text says what was found.
    func finding(in value: ArgumentValue) -> String? {
        for form in value.forms {
            if let found = finding(in: form) { return found }
        }
        return nil
    }

    private func finding(in text: String) -> String? {
        switch self {
        case .pathTraversal:
            if text.contains("\u{0}") { return "NUL byte" }
            let segments = text.split(omittingEmptySubsequences: false) { $0 == "/" || $0 == "\\" }
            return segments.contains { $0 == ".." } ? "'..' path segment" : nil
        case .sqlInjection:
            return Self.sqlPatterns.first { $0.matches(text) }.map { "SQL injection pattern /\($0.pattern)/" }
        case .shellMetacharacters:
            return Self.shellPattern.matches(text) ? "shell metacharacter" : nil
        }
    }

    private static let sqlPatterns: [LinearRegex] = [
        #"(?i)'\s*\)?\s*(or|and)\s+[^\s]+\s*(=|<|>|like\s)"#,
        #"(?i)'\s*\)?\s*(or|and)\s+'"#,
        #"(?i)'\s*(--|#|/\*|;)"#,
        #"(?i);\s*(drop|delete|insert|update|alter|create|truncate|exec|execute|shutdown|grant|revoke)\s"#,
        #"(?i)union(\s|/\*.*\*/)+(all(\s|/\*.*\*/)+)?select\s"#,
        #"(?i)(sleep|benchmark|pg_sleep)\s*\(|waitfor\s+delay\s"#,
        #"(?i)xp_cmdshell|into\s+(out|dump)file\s"#,
    ].map { try! LinearRegex($0) }

    private static let shellPattern = try! LinearRegex(#"[;|&`<>\n\r\0]|\$[({A-Za-z_]"#)
}
