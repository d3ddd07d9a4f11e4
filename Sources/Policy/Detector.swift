/// Built-in detectors for hostile argument values.
public enum Detector: String, Sendable, Hashable, CaseIterable {
    /// `..` as a path segment (after decoding and slash folding), or a NUL byte.
    case pathTraversal = "path_traversal"
    /// SQL injection, on a tokenizer (`SQLScanner`): stacked statements, tautologies, UNION, time-based calls, file
    /// and database access (ATTACH, COPY, PRAGMA, …), a comment right after a string literal.
    case sqlInjection = "sql_injection"
    /// What a shell would act on, on a shell lexer (`ShellScanner`): operators, redirections, command substitution and
    /// parameter expansion, read bare and as if spliced into single or double quotes; NUL.
    case shellMetacharacters = "shell_metacharacters"

    /// Whether the detector fires on `value` (any of its forms); the returned text says what was found. SQL is read as
    /// each of `databases` reads it.
    func finding(in value: ArgumentValue, databases: [SQLDialect] = SQLDialect.allCases) -> String? {
        for form in value.forms {
            if let found = finding(in: form, databases: databases) { return found }
        }
        return nil
    }

    private func finding(in text: String, databases: [SQLDialect]) -> String? {
        switch self {
        case .pathTraversal:
            if text.utf8.contains(0) { return "NUL byte" }
            // On scalars, with look-alikes folded and marks next to separators dropped (see `PathText`).
            return PathText(text).segments.contains(where: PathText.isParent) ? "'..' path segment" : nil
        case .sqlInjection:
            return SQLScanner.finding(in: text, databases: databases)
        case .shellMetacharacters:
            return ShellScanner.finding(in: text)
        }
    }
}
