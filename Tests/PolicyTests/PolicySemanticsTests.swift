import Policy
import StrictJSON
import Testing

@Suite("Policy semantics")
struct PolicySemanticsTests {
    static let classic = """
        {"name":"production","default_action":"deny","rules":[
          {"id":"R1","action":"allow","tools":["read_file","list_files"]},
          {"id":"R2","action":"audit","tools":["write_*"]},
          {"id":"R3","action":"deny","tools":["delete_*","exec_sql"]},
          {"id":"R4","action":"deny","tools":["read_file"],"arg_deny":{"path":".."}}]}
        """

    @Test(
        "the classic example decides as documented",
        arguments: [
            ("read_file", #"{"path":"notes.txt"}"#, "allow", "R1"),
            ("read_file", #"{"path":"../../etc/passwd"}"#, "deny", "R4"),
            ("list_files", "{}", "allow", "R1"),
            ("write_file", #"{"path":"a.txt"}"#, "audit", "R2"),
            ("delete_file", "{}", "deny", "R3"),
            ("exec_sql", "{}", "deny", "R3"),
            ("unknown_tool", "{}", "deny", "default"),
            ("Read_file", "{}", "deny", "default"),
        ])
    func classicExample(tool: String, arguments: String, outcome: String, rule: String) throws {
        let decision = try PolicyFixtures.set(Self.classic).evaluate(try PolicyFixtures.call(tool, arguments))
        #expect(decision.outcome.name == outcome)
        #expect(decision.rule == rule, "\(decision.reason)")
    }

    @Test(
        "resource URIs are matched as a server resolves them: dot segments and their encodings never leave a pattern's base",
        arguments: [
            ("file:///workspace/readme.md", "allow"), ("file:///workspace/a/../b.txt", "allow"), ("FILE:///workspace/x", "allow"),
            ("file:///workspace/../../etc/passwd", "deny"), ("file:///workspace/%2e%2e/%2e%2e/etc/passwd", "deny"),
            ("file:///workspace/%252e%252e/secret", "deny"), ("file:///workspace/..%2f..%2fetc/passwd", "deny"),
            ("file:///workspace/..\\..\\etc/passwd", "deny"), ("file:///workspace/./../x", "deny"),
            ("file:///workspace/%00x", "deny"),
            // Found in review: an encoded '?' or '#' after a dot segment ends the path for a server that decodes first.
            ("file:///workspace/..%3F", "deny"), ("file:///workspace/..%23", "deny"), ("file:///workspace/a/../..%3f/etc", "deny"),
            ("file:///workspace/%2e%2e%3F", "deny"), ("file:///workspace/a%23b.txt", "allow"), ("file:///workspace/what%3F.md", "allow"),
        ])
    func resourceURIs(uri: String, outcome: String) throws {
        let set = try PolicyFixtures.set(
            #"{"name":"r","default_action":"deny","rules":[{"id":"WS","action":"allow","methods":["resources/read"],"resources":["file:///workspace/*"]}]}"#
        )
        let request = PolicyRequest(tenant: "acme", agent: "bot1", method: "resources/read", target: uri, arguments: nil)
        let decision = set.evaluate(request)
        #expect(decision.outcome.name == outcome, "\(uri): \(decision.reason)")
    }

    @Test("a call whose canonicalisation would cost more than the budget is denied with that reason, unexamined")
    func canonicalisationBudget() throws {
        // U+FDFA grows from 3 to 33 bytes under NFKC: two such 300,000-character arguments cost over 16 MiB of work.
        let heavy = String(repeating: "\u{FDFA}", count: 300_000)
        let set = try PolicyFixtures.set(
            #"{"name":"b","default_action":"deny","rules":[{"id":"A","action":"allow","tools":["t"],"args":{"*":{"max_length":10000000}}}]}"#
        )
        let request = PolicyRequest(
            tenant: "acme", agent: "bot1", target: "t",
            arguments: .object(JSONObject([.init(key: "a", value: .string(heavy)), .init(key: "b", value: .string(heavy))])))
        let decision = set.evaluate(request)
        #expect(decision.outcome == .deny)
        #expect(decision.reason.contains("bytes of work"), "\(decision.reason)")
        let light = PolicyRequest(
            tenant: "acme", agent: "bot1", target: "t", arguments: .object(JSONObject([.init(key: "a", value: .string(heavy))])))
        #expect(set.evaluate(light).outcome == .allow)
    }

    @Test(
        "read_only_sql admits exactly one read-only query",
        arguments: [
            ("select * from t where name = 'drop table'", true), ("SELECT count(*) FROM t -- delete later", true),
            ("with a as (select 1) select * from a", true), ("select replace(name, 'a', 'b') from t;", true),
            (#"select "update" from t"#, true), ("select 1; drop table t", false), ("select 1;drop/**/table users", false),
            ("delete from t", false), ("with x as (delete from t returning *) select * from x", false),
            ("select pg_sleep(5)", false), ("select * into outfile '/tmp/x' from t", false), ("select * from t for update", false),
            ("' or 1=1", false), ("select 'unterminated", false), ("ATTACH DATABASE 'x.db' AS x", false),
            // Found in review: dialect differences and statements that need no `;`.
            ("SELECT ARRAY[[1]];DELETE FROM users;--]", false), ("SELECT 1 --\r;DELETE FROM users", false),
            ("SELECT 1--1;DELETE FROM t", false), ("SELECT 1 /*M!; DELETE FROM t */", false),
            ("SELECT 1 EXEC master..xp_cmdshell 'whoami'", false), ("SELECT 1 WAITFOR DELAY '0:0:10'", false),
            (#"SELECT "pg_sleep"(10)"#, false), (#"SELECT pg_catalog."pg_read_file"('/etc/passwd')"#, false),
            ("SELECT load_extension('x')", false), ("SELECT * FROM OPENQUERY(lnk,'DELETE FROM t')", false),
            ("SELECT substring(name FROM 1 FOR 3), copy, sleep FROM ads", true), ("(SELECT 1) UNION (SELECT 2)", true),
            // Found in review: PostgreSQL and SQL Server nest block comments; the statements after the first `*/` run.
            ("SELECT 1 /* /* */ # $a$ [ */ ; DELETE FROM t; -- ] $a$", false), ("SELECT 1 /* a /* b */ c */ FROM t", true),
            // Found in review: the database gets the value as sent, not the canonical form (`%27`, `\`, U+FF07 fold to
            // quotes or slashes there and hid the second statement inside a literal).
            ("SELECT 1 %27; DROP TABLE users; -- '", false), ("SELECT E'a\\' ' ; DROP TABLE users; -- '", false),
            ("SELECT 1 \u{FF07}; DROP TABLE users; --\u{FF07}", false), ("SELECT 'x\\' ' , SLEEP(5) -- '", false),
            // Found in review: PostgreSQL decodes U&"…" identifiers (pg_sleep, dblink_exec).
            (#"SELECT U&"pg\005fsleep"(600)"#, false), (#"SELECT U&"dblink\005fexec"('dbname=app', 'DROP TABLE users')"#, false),
            (#"SELECT U&"pg!005fsleep" UESCAPE '!' (5)"#, false),
            // Found in review: SQL Server statements that follow another without `;`, and locks.
            ("SELECT 1 WHILE 1=1 SELECT 1", false), ("SELECT 1 DENY SELECT ON t TO public", false),
            ("SELECT 1 DISABLE TRIGGER ALL ON t", false), ("SELECT 1 SAVE TRANSACTION s", false), ("SELECT 1 BEGIN TRANSACTION", false),
            ("SELECT 1 SETUSER 'dbo'", false), ("SELECT 1 RAISERROR('x',16,1) WITH LOG", false), ("SELECT 1 USE master", false),
            ("SELECT 1 COMMIT", false), ("SELECT * FROM t LOCK IN SHARE MODE", false), ("SELECT * FROM t WITH (UPDLOCK, HOLDLOCK)", false),
            ("SELECT lo_creat(-1)", false), ("SELECT lowrite(0, 'x')", false),
            ("SELECT enable, commit, save FROM t USE INDEX (i) WHERE a = 'if' ORDER BY 1", true),
            ("SELECT IF(a > 1, 'x', 'y'), \"while\" FROM t", true), (#"SELECT u, "u&" FROM t"#, true),
            // Found in the fixes' review: other spellings, and what the first fix refused wrongly.
            ("SELECT * FROM t WITH (SERIALIZABLE)", false), ("SELECT * FROM t WITH (NOLOCK, REPEATABLEREAD)", false),
            ("SELECT 1 WHILE -1<0 SELECT 1", false), ("SELECT 1 WHILE 1 IN (1) SELECT 1", false),
            ("SELECT 1 COMMIT SELECT 2", false), ("SELECT 1 ROLLBACK SELECT 2", false),
            ("SELECT 1 SET IMPLICIT_TRANSACTIONS ON SELECT 2", false),
            ("SELECT 1 SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", false), ("SELECT 1 RECEIVE TOP(1) * FROM q", false),
            ("SELECT 1 DENY SHOWPLAN TO public", false), ("SELECT 1 USE otherdb (SELECT 2)", false),
            ("SELECT 1 OPEN SYMMETRIC KEY k DECRYPTION BY PASSWORD = 'p'", false),
            ("SELECT pg_create_physical_replication_slot('s', true)", false), ("SELECT pg_advisory_lock_shared(1)", false),
            ("SELECT sha, message FROM commits ORDER BY commit", true), ("SELECT a, rollback FROM t GROUP BY rollback", true),
            ("SELECT * FROM t WHERE lock IN (1, 2)", true), ("SELECT sha, revert FROM commits WHERE reconfigure = true", true),
            ("SELECT open, close, high, low FROM prices", true),
            ("SELECT CONVERT(a USING latin1), CAST(b AS CHAR CHARACTER SET utf8mb4) FROM t", true),
        ])
    func readOnlySQL(query: String, allowed: Bool) throws {
        let set = try PolicyFixtures.set(
            #"{"name":"s","default_action":"deny","rules":[{"id":"Q","action":"allow","tools":["q"],"args":{"sql":{"read_only_sql":true}}}]}"#
        )
        let decision = set.evaluate(
            PolicyRequest(
                tenant: "acme", agent: "bot1", target: "q", arguments: .object(JSONObject([.init(key: "sql", value: .string(query))]))))
        #expect((decision.outcome == .allow) == allowed, "\(query): \(decision.reason)")
    }

    @Test(
        "sql_dialects reads a query as the named databases do: what they read as one read-only query passes, and what any of them reads otherwise is refused",
        arguments: [
            // A literal ending in a backslash is closed for SQL Server and SQLite; MySQL, and PostgreSQL with
            // `standard_conforming_strings` off, read it as open.
            (#"SELECT * FROM f WHERE p = 'C:\data\'"#, #"["postgresql"]"#, false),
            (#"SELECT '\' || '; DELETE FROM t; SELECT 1 --\'"#, #"["postgresql"]"#, false),
            (#"SELECT * FROM f WHERE p = 'C:\data\'"#, #"["sqlserver","sqlite"]"#, true),
            (#"SELECT * FROM f WHERE p = 'C:\data\'"#, #"["mysql"]"#, false),
            (#"SELECT * FROM f WHERE p = 'C:\data\'"#, #"["postgresql","mysql"]"#, false),
            ("SELECT $$;$$", #"["postgresql"]"#, true), ("SELECT $$;$$", #"["sqlite"]"#, false),
            ("SELECT [a;b] FROM t", #"["sqlserver"]"#, true), ("SELECT [a;b] FROM t", #"["postgresql"]"#, false),
            // What each named database reads as a second statement, or as an open literal, is still refused.
            (#"SELECT 'a\'; DROP TABLE t; -- '"#, #"["mysql"]"#, false), (#"SELECT 'a\'; DROP TABLE t; -- '"#, #"["postgresql"]"#, false),
            ("SELECT 1 # '; DROP TABLE t", #"["postgresql"]"#, false), (#"SELECT "x"; DROP TABLE t"#, #"["sqlserver"]"#, false),
            (#"SELECT U&"pg\005fsleep"(600)"#, #"["postgresql"]"#, false), ("SELECT 1 WHILE 1=1 SELECT 1", #"["sqlserver"]"#, false),
            ("SELECT 1 %27; DROP TABLE t; -- '", #"["postgresql"]"#, false),
        ])
    func sqlDialects(query: String, dialects: String, allowed: Bool) throws {
        let set = try PolicyFixtures.set(
            #"{"name":"s","default_action":"deny","rules":[{"id":"Q","action":"allow","tools":["q"],"args":{"sql":{"read_only_sql":true,"sql_dialects":"#
                + dialects + "}}}]}")
        let decision = set.evaluate(
            PolicyRequest(
                tenant: "acme", agent: "bot1", target: "q", arguments: .object(JSONObject([.init(key: "sql", value: .string(query))]))))
        #expect((decision.outcome == .allow) == allowed, "\(query) as \(dialects): \(decision.reason)")
    }

    @Test(
        "sql_injection sees calls of quoted function names and tautologies written with signs, arithmetic, <=>, IS NOT NULL, prefixed literals, server variables, COLLATE and a column compared with itself",
        arguments: [
            // Found in review: a quoted name is a call all the same (SQLite, MySQL, PostgreSQL and SQL Server run these).
            (#"1 OR "pg_sleep"(10)"#, false), ("1 AND `sleep`(5)", false), ("1 AND [sleep](5)", false),
            (#"1 AND "randomblob"(300000000)"#, false), ("x' and `updatexml`(1,concat(0x7e,user()),1) and '", false),
            ("1 or `load_file`(0x2f)", false), (#"1 AND "load_extension"('x')"#, false),
            // Found in review: always-true conditions.
            ("1 OR -1", false), ("1 OR +1", false), ("1 OR 2-1", false), ("1 OR 1<=>1", false), ("1 OR 1 IS NOT NULL", false),
            ("1 OR id=id", false), ("x' OR name=name AND 'a", false), ("1 or @@version", false), ("1 OR b'1'", false),
            ("x' OR 'a'<=>'a", false),
            ("x' OR N'a'=N'a", false), ("x' OR 'a' COLLATE utf8mb4_bin = 'a", false), ("1 OR (1)=(1)", false), ("1 OR(1)--", false),
            // Prose and ordinary values stay allowed.
            ("Tom or Jerry", true), ("rock and roll", true), ("pick 1 or 2 apples", true), ("pay 5 or -1 later", true),
            ("either this or that = that one", true), ("x-1", true), ("O'Brien", true),
        ])
    func sqlInjectionDetector(value: String, allowed: Bool) throws {
        let set = try PolicyFixtures.set(
            #"{"name":"s","default_action":"deny","rules":[{"id":"Q","action":"allow","tools":["q"],"args":{"v":{"detectors":["sql_injection"]}}}]}"#
        )
        let decision = set.evaluate(
            PolicyRequest(
                tenant: "acme", agent: "bot1", target: "q", arguments: .object(JSONObject([.init(key: "v", value: .string(value))]))))
        #expect((decision.outcome == .allow) == allowed, "\(value): \(decision.reason)")
    }

    @Test(
        "allow patterns and upper length bounds hold for the value as sent, not only its canonical form",
        arguments: [
            // Found in review: a backslash folded to '/' passed a pattern that admits neither; an encoded value passed a
            // length bound its decoded form kept.
            ("abc\\", false), ("a\\\\b", false), ("a%2Fb", false), ("plain-name_1.txt", true), ("a/b", true),
        ])
    func allowPatternOnEveryForm(value: String, allowed: Bool) throws {
        let set = try PolicyFixtures.set(
            #"{"name":"s","default_action":"deny","rules":[{"id":"W","action":"allow","tools":["t"],"args":{"v":{"allow":["^[A-Za-z0-9_./-]+$"]}}}]}"#
        )
        let decision = set.evaluate(
            PolicyRequest(
                tenant: "acme", agent: "bot1", target: "t", arguments: .object(JSONObject([.init(key: "v", value: .string(value))]))))
        #expect((decision.outcome == .allow) == allowed, "\(value): \(decision.reason)")
    }

    @Test(
        "decomposed text (as macOS writes file names) matches allow patterns as its canonical form; length bounds count it as sent")
    func decomposedTextAllowed() throws {
        func outcome(_ value: String, maximumLength: Int) throws -> PolicyDecision {
            let set = try PolicyFixtures.set(
                #"{"name":"s","default_action":"deny","rules":[{"id":"W","action":"allow","tools":["t"],"args":{"v":{"allow":["^[a-zé ]+$"],"max_length":"#
                    + "\(maximumLength)}}}]}")
            return set.evaluate(
                PolicyRequest(
                    tenant: "acme", agent: "bot1", target: "t", arguments: .object(JSONObject([.init(key: "v", value: .string(value))]))))
        }
        for value in ["caf\u{E9}", "cafe\u{301}"] {
            let decision = try outcome(value, maximumLength: 5)
            #expect(decision.outcome == .allow, "\(value.unicodeScalars.count) scalars: \(decision.reason)")
        }
        #expect(try outcome("caf\u{E9}", maximumLength: 4).outcome == .allow)
        // Found in review: the bound held for the canonical form only, so 20 decomposed Hangul syllables (60 scalars)
        // passed `max_length: 20`. The tool receives the scalars as sent.
        let refused = try outcome("cafe\u{301}", maximumLength: 4)
        #expect(refused.outcome == .deny && refused.reason.contains("longer than 4 characters (5 Unicode scalars)"), "\(refused.reason)")
    }

    @Test("max_length and max_bytes count the longest form: 20 characters percent-encoded over and over are refused")
    func lengthOfEveryForm() throws {
        let set = try PolicyFixtures.set(
            #"{"name":"s","default_action":"deny","rules":[{"id":"L","action":"allow","tools":["t"],"args":{"v":{"max_length":20}}},{"id":"B","action":"allow","tools":["u"],"args":{"v":{"max_bytes":20}}}]}"#
        )
        var encoded = String(repeating: "A", count: 20)
        for _ in 0..<3 { encoded = encoded.unicodeScalars.map { "%" + String($0.value, radix: 16, uppercase: true) }.joined() }
        for tool in ["t", "u"] {
            func decide(_ value: String) -> PolicyDecision {
                PolicyFixtures.decide(set, tool: tool, "v", value)
            }
            #expect(decide(String(repeating: "A", count: 20)).outcome == .allow)
            let decision = decide(encoded)
            #expect(decision.outcome == .deny && decision.reason.contains("longer than 20"), "\(tool): \(decision.reason)")
        }
    }

    @Test("text with more than 30 combining marks in a row is refused, not normalised (reordering it is quadratic)")
    func streamSafeText() throws {
        let set = try PolicyFixtures.set(
            #"{"name":"s","default_action":"deny","rules":[{"id":"S","action":"allow","tools":["t"],"args":{"*":{"max_length":10000000}}}]}"#
        )
        func decide(_ value: String) -> PolicyDecision {
            PolicyFixtures.decide(set, "a", value)
        }
        let alternating = "a" + String(repeating: "\u{0316}\u{0301}", count: 200_000)
        let refused = decide(alternating)
        #expect(refused.outcome == .deny)
        #expect(refused.reason.contains("combining marks in a row"), "\(refused.reason)")
        // U+0F73 has combining class 0 but decomposes into two combining marks: it counts as two.
        #expect(decide("\u{0F40}" + String(repeating: "\u{0F73}", count: 16)).outcome == .deny)
        #expect(decide("\u{0F40}" + String(repeating: "\u{0F73}", count: 15)).outcome == .allow)
        // Ordinary accented text and short runs pass.
        #expect(
            decide("Crème brûlée, a\u{0301}\u{0302}\u{0303}, Zalgo-lite e" + String(repeating: "\u{0301}", count: 30)).outcome == .allow)
    }

    @Test("max_length and min_length count Unicode scalars, max_bytes UTF-8 bytes")
    func lengths() throws {
        let set = try PolicyFixtures.set(
            #"{"name":"l","default_action":"deny","rules":[{"id":"L","action":"allow","tools":["t"],"args":{"a":{"max_length":10,"min_length":3,"max_bytes":15}}}]}"#
        )
        func decide(_ value: String) -> PolicyDecision.Outcome {
            PolicyFixtures.decide(set, "a", value).outcome
        }
        #expect(decide("abcdefghij") == .allow)
        #expect(decide("é" + String(repeating: "\u{0301}", count: 10)) == .deny)  // one Character, 11 scalars
        #expect(decide(String(repeating: "é", count: 8)) == .deny)  // 8 scalars, 16 bytes
        #expect(decide("ab") == .deny)
        #expect(decide("a\u{0301}\u{0301}b") == .allow)  // NFKC composes a + U+0301 into á: 3 scalars
        #expect(decide("a\u{0301}\u{0301}") == .deny)  // 2 scalars once composed
    }

    @Test("values encoded deeper than the decoding bound, or decoding to invalid UTF-8, are refused by any constraint")
    func ambiguousEncodings() throws {
        let set = try PolicyFixtures.set(
            #"{"name":"e","default_action":"deny","rules":[{"id":"A","action":"allow","tools":["t"],"args":{"*":{"max_length":1000}}}]}"#)
        func decide(_ value: String) -> PolicyDecision {
            PolicyFixtures.decide(set, "a", value)
        }
        let deep = "%" + String(repeating: "25", count: 1) + String(repeating: "25", count: 9) + "2e%2e/x"
        #expect(decide(deep).outcome == .deny)
        #expect(decide(deep).reason.contains("levels deep"), "\(decide(deep).reason)")
        #expect(decide("..%c0%af..%c0%afetc").reason.contains("invalid UTF-8"))
        #expect(decide("%2e%2e is fine as text: 100%25").outcome == .allow)
    }

    @Test("an invisible character next to a separator is refused, not dropped: docs\\u200B/ is not docs/")
    func invisibleNextToSeparator() throws {
        let set = try PolicyFixtures.set(
            #"{"name":"p","default_action":"deny","rules":[{"id":"D","action":"allow","tools":["t"],"args":{"path":{"path":{"allowed_prefixes":["docs"]}}}}]}"#
        )
        func decide(_ path: String) -> PolicyDecision {
            PolicyFixtures.decide(set, "path", path)
        }
        #expect(decide("docs/x").outcome == .allow)
        #expect(decide("docs\u{200B}/x").outcome == .deny, "\(decide("docs\u{200B}/x").reason)")
        #expect(decide("docs/\u{2060}x").outcome == .deny)
        #expect(decide("docs/caf\u{200B}e.txt").outcome == .allow)  // inside a name it hides nothing
    }

    @Test("path prefixes hold for every form, and an invisible character inside a name is part of that name")
    func prefixesOnEveryForm() throws {
        let set = try PolicyFixtures.set(
            #"{"name":"p","default_action":"deny","rules":[{"id":"D","action":"allow","tools":["t"],"args":{"path":{"path":{"allowed_prefixes":["/srv/data"],"allow_absolute":true}}}}]}"#
        )
        func decide(_ path: String) -> PolicyDecision {
            PolicyFixtures.decide(set, "path", path)
        }
        #expect(decide("/srv/data/x").outcome == .allow)
        #expect(decide("/srv/data/caf\u{200B}e.txt").outcome == .allow)
        #expect(decide("/srv/data/\u{FB01}le.txt").outcome == .allow)  // a ligature inside the prefix: still inside
        // Decomposed names, as macOS writes them (a combining mark right before the dot), name the same file: allowed.
        #expect(decide("/srv/data/cafe\u{301}.txt").outcome == .allow, "\(decide("/srv/data/cafe\u{301}.txt").reason)")
        #expect(decide("/srv/data/re\u{301}sume\u{301}.pdf").outcome == .allow)
        // Found in review: NFKC makes `ª` and `ᵃ` an `a`, but the tool opens a sibling of /srv/data.
        for sibling in ["/srv/dat\u{AA}/secret", "/srv/d\u{1D43}ta/secret", "/srv/dat\u{24D0}/x"] {
            let decision = decide(sibling)
            #expect(decision.outcome == .deny && decision.reason.contains("in the form"), "\(sibling): \(decision.reason)")
        }
        // Found in the fix's review: invisible characters inside a name were dropped, so `da` U+200B `ta` was `data`.
        for sibling in ["/srv/da\u{200B}ta/secret", "/srv/dat\u{20D7}a/secret"] {
            #expect(decide(sibling).outcome == .deny, "\(sibling)")
        }
    }

    @Test("'..;' is a parent segment (Java servers strip ';' parameters), and with traversal allowed an ambiguous one")
    func parentWithParameters() throws {
        let strict = try PolicyFixtures.set(
            #"{"name":"p","default_action":"deny","rules":[{"id":"D","action":"allow","tools":["t"],"args":{"path":{"path":{},"detectors":["path_traversal"]}}},{"id":"T","action":"allow","tools":["u"],"args":{"path":{"path":{"allowed_prefixes":["data"],"allow_traversal":true}}}}]}"#
        )
        func decide(_ tool: String, _ path: String) -> PolicyDecision { PolicyFixtures.decide(strict, tool: tool, "path", path) }
        for path in ["a/..;/..;/etc", "..%3b/admin", "a/..;x/b", "a/...;/b"] {
            #expect(decide("t", path).outcome == .deny, "\(path)")
        }
        #expect(decide("t", "a/b;c/d").outcome == .allow)
        #expect(decide("t", "a/.;/b").outcome == .allow)
        #expect(decide("u", "data/a/..;/b").reason.contains("readers disagree"), "\(decide("u", "data/a/..;/b").reason)")
        #expect(decide("u", "data/a/../b").outcome == .allow)
    }

    @Test("the percent-decoded text is a form of its own: NFKC does not hide what decoding alone shows")
    func decodedFormChecked() throws {
        let set = try PolicyFixtures.set(
            #"{"name":"p","default_action":"deny","rules":[{"id":"S","action":"allow","tools":["t"],"args":{"v":{"detectors":["shell_metacharacters"]}}}]}"#
        )
        func decide(_ value: String) -> PolicyDecision {
            PolicyFixtures.decide(set, "v", value)
        }
        // `%3E%CC%B8` decodes to `>` + U+0338, which NFKC composes into `≯`: a tool that only decodes sees a redirection.
        #expect(decide("x %3E%CC%B8/tmp/evil").outcome == .deny, "\(decide("x %3E%CC%B8/tmp/evil").reason)")
        #expect(decide("x \u{226F} y").outcome == .allow)
    }

    @Test("allow patterns check an argument's values, not the keys of an object given for it; a type keeps it a value")
    func allowPatternsAndObjectKeys() throws {
        func decide(_ constraint: String, _ arguments: String) throws -> PolicyDecision {
            try PolicyFixtures.set(
                #"{"name":"p","default_action":"deny","rules":[{"id":"D","action":"allow","tools":["t"],"args":{"user":\#(constraint)}}]}"#
            ).evaluate(try PolicyFixtures.call("t", arguments))
        }
        #expect(try decide(#"{"allow":["^[a-z]+$"]}"#, #"{"user":"bob"}"#).outcome == .allow)
        #expect(try decide(#"{"allow":["^[a-z]+$"]}"#, #"{"user":"Bob!"}"#).outcome == .deny)
        #expect(try decide(#"{"allow":["^[a-z]+$"]}"#, #"{"user":{"$ne":"x"}}"#).outcome == .allow)
        #expect(try decide(#"{"allow":["^[a-z]+$"],"type":"string"}"#, #"{"user":{"$ne":"x"}}"#).outcome == .deny)
    }

    @Test("a path under a prefix only as a Windows reader sees it (backslash, look-alike slash, leading blank) is refused")
    func prefixHeldForEveryReader() throws {
        let set = try PolicyFixtures.set(
            #"{"name":"p","default_action":"deny","rules":[{"id":"D","action":"allow","tools":["t"],"args":{"path":{"path":{"allowed_prefixes":["data"]}}}}]}"#
        )
        func decide(_ path: String) -> PolicyDecision {
            PolicyFixtures.decide(set, "path", path)
        }
        // Found by review: each names a sibling of data/ to a POSIX file system.
        for path in [" data/secret", "\u{A0}data/secret", "data\\secret", "data\u{FF0F}secret", "data\u{2215}secret", "data%2Fsecret"] {
            #expect(decide(path).outcome == .deny, "\(path.debugDescription): \(decide(path).reason)")
        }
        for path in ["data", "data/secret", "data/sub/report.csv", "data/my%20file.txt", "./data/x", "data//x"] {
            #expect(decide(path).outcome == .allow, "\(path.debugDescription): \(decide(path).reason)")
        }
        // Found by the review of the first version: a name canonically equivalent to the prefix is another directory to a
        // POSIX file system.
        let accented = try PolicyFixtures.set(
            #"{"name":"p","default_action":"deny","rules":[{"id":"D","action":"allow","tools":["t"],"args":{"path":{"path":{"allowed_prefixes":["Kb","café"]}}}}]}"#
        )
        for path in ["\u{212A}b/x", "cafe\u{301}/x"] {
            #expect(PolicyFixtures.decide(accented, "path", path).outcome == .deny, "\(path.debugDescription)")
        }
        for path in ["Kb/x", "café/x"] { #expect(PolicyFixtures.decide(accented, "path", path).outcome == .allow, "\(path)") }
    }

    @Test("zsh's =(cmd), arithmetic $[…] and $- are shell findings; a price is not")
    func shellForms() throws {
        let set = try PolicyFixtures.set(
            #"{"name":"p","default_action":"deny","rules":[{"id":"S","action":"allow","tools":["t"],"args":{"v":{"detectors":["shell_metacharacters"]}}}]}"#
        )
        func decide(_ value: String) -> PolicyDecision.Outcome {
            PolicyFixtures.decide(set, "v", value).outcome
        }
        for value in [
            "=(id)", "x =(id)", "$[1+1]", "echo $-", "\"$[1]\"", "*(e:reboot:)", "a?(+fn)", "[ab](e:id:)", "*.txt(e:reboot:)",
            "a*b(e:reboot:)",
        ] {
            #expect(decide(value) == .deny, "\(value)")
        }
        for value in ["$0.99", "a=(b)", "x = (y)", "1+1=2", "price (USD)", "f(x)"] { #expect(decide(value) == .allow, "\(value)") }
    }

    @Test("with traversal allowed, '..' counts only in paths whose separators and dots are plain ASCII as sent")
    func traversalNeedsPlainSeparators() throws {
        let set = try PolicyFixtures.set(
            #"{"name":"p","default_action":"deny","rules":[{"id":"D","action":"allow","tools":["t"],"args":{"path":{"path":{"allowed_prefixes":["data"],"allow_traversal":true}}}}]}"#
        )
        func decide(_ path: String) -> PolicyDecision {
            PolicyFixtures.decide(set, "path", path)
        }
        #expect(decide("data/a/b/../c").outcome == .allow)
        #expect(decide("data/a/../../etc/passwd").outcome == .deny)
        #expect(decide("data/a\\b\\c/x").outcome == .allow)  // no '..': nothing to count
        // Two segments to a POSIX server, seven to the canonical form: seven '..' leave `data` there, not here.
        let fakeSeparators = [
            "data/a\\b\\c\\d\\e\\f\\g/../../../../../../../etc/passwd", "data/a\u{2215}b\u{2215}c/../../../etc/passwd",
            "data/a%2fb%2fc/../../../etc/passwd", "data/a\u{FF0F}b/../../etc/passwd", "data/x/\u{FF0E}\u{FF0E}/y",
        ]
        for path in fakeSeparators {
            let decision = decide(path)
            #expect(decision.outcome == .deny, "\(path)")
            #expect(decision.reason.contains("readers disagree"), "\(path): \(decision.reason)")
        }
    }

    @Test("JSON inside string arguments is inspected by default; nested_json: false switches it off for one rule")
    func nestedJSONSwitch() throws {
        func set(_ nested: String) throws -> TenantPolicySet {
            try PolicyFixtures.set(
                #"{"name":"n","default_action":"deny","rules":[{"id":"P","action":"allow","tools":["t"]\#(nested),"args":{"path":{"path":{"allow_traversal":false}}}}]}"#
            )
        }
        let call = try PolicyFixtures.call("t", #"{"path":"a.txt","files":"[{\"path\":\"../../etc/passwd\"}]"}"#)
        let inspecting = try set("").evaluate(call)
        #expect(inspecting.outcome == .deny)
        #expect(inspecting.reason.contains("files<json>"), "\(inspecting.reason)")
        #expect(try set(#","nested_json":true"#).evaluate(call).outcome == .deny)
        let switchedOff = try set(#","nested_json":false"#).evaluate(call)
        #expect(switchedOff.outcome == .allow, "\(switchedOff.reason)")
        // The switch only skips what is inside the string; the arguments themselves are still checked.
        #expect(try set(#","nested_json":false"#).evaluate(try PolicyFixtures.call("t", #"{"path":"../x"}"#)).outcome == .deny)
        #expect(throws: PolicyLoadError.self) { try set(#","nested_json":"no""#) }
    }

    @Test("call_timeout_seconds: carried by the decisions of the allow or audit rule that decides; refused on deny rules")
    func callTimeout() throws {
        let set = try PolicyFixtures.set(
            #"{"name":"c","default_action":"deny","rules":[{"id":"A","action":"allow","tools":["slow"],"call_timeout_seconds":600},{"id":"B","action":"allow","tools":["fast"]}]}"#
        )
        #expect(set.evaluate(try PolicyFixtures.call("slow", "{}")).callTimeoutSeconds == 600)
        #expect(set.evaluate(try PolicyFixtures.call("fast", "{}")).callTimeoutSeconds == nil)
        #expect(throws: PolicyLoadError.self) {
            try PolicyFixtures.set(#"{"name":"c","rules":[{"id":"D","action":"deny","tools":["x"],"call_timeout_seconds":5}]}"#)
        }
        #expect(throws: PolicyLoadError.self) {
            try PolicyFixtures.set(#"{"name":"c","rules":[{"id":"E","action":"allow","tools":["x"],"call_timeout_seconds":0}]}"#)
        }
    }

    @Test("full arguments are logged only when the deciding rule asks for them")
    func argumentLoggingFollowsTheDecidingRule() throws {
        let set = try PolicyFixtures.set(
            """
            {"name":"p","default_action":"deny","rules":[
              {"id":"LOG","action":"allow","tools":["deploy"],"log_arguments":true},
              {"id":"NOKEY","action":"deny","tools":["deploy"],"arg_deny":{"key":"private key"}}]}
            """)
        let denied = set.evaluate(try PolicyFixtures.call("deploy", #"{"key":"BEGIN PRIVATE KEY MIIEvQ"}"#))
        #expect(denied.outcome == .deny && denied.rule == "NOKEY")
        #expect(!denied.logArguments, "a denied call's secret would be logged because another rule asked")
        let allowed = set.evaluate(try PolicyFixtures.call("deploy", #"{"key":"public"}"#))
        #expect(allowed.outcome == .allow && allowed.logArguments)
    }

    @Test("deny overrides: every matching rule is reported, and a later deny beats an earlier allow")
    func everyMatchReported() throws {
        let decision = try PolicyFixtures.set(Self.classic).evaluate(try PolicyFixtures.call("read_file", #"{"path":"../x"}"#))
        #expect(decision.matches.map(\.rule) == ["R1", "R4"])
        #expect(decision.matches.map(\.effect) == [.allow, .deny])
        #expect(decision.matches[1].findings.first?.location == "path")
    }

    @Test("audit wins over allow, deny over audit, across documents")
    func acrossDocuments() throws {
        let set = try PolicyFixtures.set(
            #"{"default_action":"allow","rules":[{"id":"A","action":"allow","tools":["t*"]}]}"#,
            #"{"rules":[{"id":"B","action":"audit","tools":["tool"]},{"id":"C","action":"deny","tools":["tool2"]}]}"#)
        #expect(set.evaluate(try PolicyFixtures.call("tool")).rule == "B")
        #expect(set.evaluate(try PolicyFixtures.call("tool2")).rule == "C")
        #expect(set.evaluate(try PolicyFixtures.call("t3")).outcome == .allow)
        // The most restrictive default wins: the second document has no default_action, i.e. deny.
        #expect(set.defaultAction == .deny)
        #expect(set.evaluate(try PolicyFixtures.call("other")).outcome == .deny)
    }

    @Test("agent patterns filter rules")
    func agents() throws {
        let set = try PolicyFixtures.set(#"{"rules":[{"id":"A","action":"allow","tools":["x"],"agents":["bot*"]}]}"#)
        #expect(set.evaluate(try PolicyFixtures.call("x", agent: "bot7")).outcome == .allow)
        #expect(set.evaluate(try PolicyFixtures.call("x", agent: "robot")).outcome == .deny)
    }

    @Test("scopes: an allow rule without its scopes denies, and says which scope is missing")
    func scopes() throws {
        let set = try PolicyFixtures.set(#"{"rules":[{"id":"A","action":"allow","tools":["x"],"scopes":["tools:write"]}]}"#)
        let missing = set.evaluate(try PolicyFixtures.call("x"))
        #expect(missing.outcome == .deny)
        #expect(missing.reason.contains("requires scope tools:write"))
        #expect(set.evaluate(try PolicyFixtures.call("x", scopes: ["tools:write"])).outcome == .allow)
    }

    @Test("allow rules with argument constraints deny when the constraints are violated")
    func constraintsOnAllow() throws {
        let set = try PolicyFixtures.set(
            #"""
            {"rules":[{"id":"A","action":"allow","tools":["open"],"args":{
              "path":{"path":{"allowed_prefixes":["/data"],"allow_absolute":true}},
              "mode":{"allow":["^(r|rw)$"]},"size":{"type":"number"},"name":{"required":true,"max_length":5}}}]}
            """#)
        func outcome(_ arguments: String) throws -> String {
            set.evaluate(try PolicyFixtures.call("open", arguments)).outcome.name
        }
        #expect(try outcome(#"{"name":"a","path":"/data/x","mode":"r","size":3}"#) == "allow")
        #expect(try outcome(#"{"name":"a","path":"/database/x"}"#) == "deny")
        #expect(try outcome(#"{"name":"a","path":"/data/../etc"}"#) == "deny")
        #expect(try outcome(#"{"name":"a","mode":"w"}"#) == "deny")
        #expect(try outcome(#"{"name":"a","size":"3"}"#) == "deny")
        #expect(try outcome(#"{"path":"/data/x"}"#) == "deny")
        #expect(try outcome(#"{"name":"toolong"}"#) == "deny")
    }

    @Test("rules for other MCP methods: resources by URI, prompts by name")
    func methods() throws {
        let set = try PolicyFixtures.set(
            #"""
            {"rules":[{"id":"M1","action":"allow","methods":["resources/read"],"resources":["file:///pub/*"]},
                      {"id":"M2","action":"allow","methods":["prompts/get"],"prompts":["sum*"]},
                      {"id":"M3","action":"allow","methods":["completion/complete"]}]}
            """#)
        func decide(_ method: String, _ target: String?) -> String {
            set.evaluate(PolicyRequest(tenant: "acme", agent: "a", method: method, target: target, arguments: nil)).outcome.name
        }
        #expect(decide("resources/read", "file:///pub/a") == "allow")
        #expect(decide("resources/read", "file:///etc/passwd") == "deny")
        #expect(decide("prompts/get", "summarize") == "allow")
        #expect(decide("prompts/get", "leak") == "deny")
        #expect(decide("completion/complete", nil) == "allow")
        #expect(decide("tools/call", "anything") == "deny")
        #expect(decide("admin/shutdown", nil) == "deny")
    }

    @Test("the shipped policies: global denies cannot be overridden, tenants differ, unknown tenants are denied")
    func shipped() throws {
        let snapshot = try PolicyFixtures.shipped()
        #expect(snapshot.tenants.keys.sorted() == ["acme", "globex"])
        #expect(snapshot.evaluate(try PolicyFixtures.call("exec_shell", tenant: "acme")).rule == "G1")
        #expect(snapshot.evaluate(try PolicyFixtures.call("exec_shell", tenant: "globex")).rule == "G1")
        #expect(snapshot.evaluate(try PolicyFixtures.call("search_docs", tenant: "globex")).outcome == .allow)
        #expect(snapshot.evaluate(try PolicyFixtures.call("search_docs", tenant: "acme")).outcome == .deny)
        #expect(snapshot.evaluate(try PolicyFixtures.call("read_file", #"{"path":"a"}"#, tenant: "globex")).outcome == .deny)
        let key = #"{"content":"-----BEGIN RSA PRIVATE KEY-----\nMII..."}"#
        #expect(snapshot.evaluate(try PolicyFixtures.call("write_file", key, tenant: "acme")).rule == "G2")
        let stranger = snapshot.evaluate(try PolicyFixtures.call("read_file", tenant: "initech"))
        #expect(stranger.outcome == .deny)
        #expect(stranger.rule == "no_policy")
    }

    @Test("a wildcard matches an empty run: `exec*` applies to `exec` itself, in decisions and in lists")
    func wildcardMatchesEmptyRun() throws {
        let set = try PolicyFixtures.set(#"{"default_action":"allow","rules":[{"id":"D","action":"deny","tools":["exec*"]}]}"#)
        #expect(set.evaluate(try PolicyFixtures.call("exec")).rule == "D")
        #expect(set.evaluate(try PolicyFixtures.call("exec_shell")).rule == "D")
        #expect(set.evaluate(try PolicyFixtures.call("exe")).outcome == .allow)
        #expect(!set.mayCall(try PolicyFixtures.call("exec")))
    }

    @Test("evaluation only looks at rules indexed for the tool")
    func indexing() throws {
        var rules: [String] = []
        for index in 0..<500 { rules.append(#"{"id":"E\#(index)","action":"allow","tools":["tool_\#(index)"]}"#) }
        for index in 0..<100 { rules.append(#"{"id":"P\#(index)","action":"deny","tools":["ns\#(index)_*"]}"#) }
        let set = try PolicyFixtures.set(#"{"rules":[\#(rules.joined(separator: ","))]}"#)
        #expect(set.evaluate(try PolicyFixtures.call("tool_42")).rule == "E42")
        #expect(set.evaluate(try PolicyFixtures.call("ns7_x")).rule == "P7")
        #expect(set.evaluate(try PolicyFixtures.call("ns7")).rule == "default")
        #expect(set.candidateRules(for: try PolicyFixtures.call("tool_42")) == ["E42"])
        #expect(set.candidateRules(for: try PolicyFixtures.call("ns7_x")) == ["P7"])
    }
}

@Suite("Bounded argument examination")
struct ArgumentBoundTests {
    @Test("more than 10,000 argument values are refused unexamined by rules with argument constraints")
    func tooManyLeaves() throws {
        let set = try PolicyFixtures.set(#"{"rules":[{"id":"A","action":"allow","tools":["x"],"args":{"*":{"max_length":10}}}]}"#)
        let many = "[" + Array(repeating: "1", count: 10_001).joined(separator: ",") + "]"
        let decision = set.evaluate(try PolicyFixtures.call("x", #"{"items":\#(many)}"#))
        #expect(decision.outcome == .deny)
        #expect(decision.reason.contains("refused unexamined"))
        #expect(set.evaluate(try PolicyFixtures.call("x", #"{"items":[1,2]}"#)).outcome == .allow)
    }
}
