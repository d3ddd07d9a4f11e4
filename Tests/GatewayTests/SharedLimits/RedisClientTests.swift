import Logging
import NIOCore
import NIOPosix
import Redis
import TestSupport
import Testing

/// The hand-written Redis client against a real `redis-server` on loopback.
@Suite struct RedisClientTests {
    static func client(_ server: RedisServer, password: String? = nil, commandTimeout: Duration = .seconds(2)) throws -> RedisClient {
        var settings = try RedisSettings(url: server.url)
        settings.password = password
        settings.commandTimeout = commandTimeout
        settings.minimumBackoff = .milliseconds(20)
        settings.maximumBackoff = .milliseconds(100)
        return RedisClient(settings: settings, logger: Logger(label: "test.redis"))
    }

    @Test func pipelinedCommandsGetTheirOwnReplies() async throws {
        let server = try await RedisServer()
        let client = try Self.client(server)
        defer { client.close() }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        // 200 commands sent at once on the loop's connections; each reply must match its own command.
        let replies = try await loop.flatSubmit {
            EventLoopFuture.whenAllSucceed(
                (0..<200).map { index in client.send(["ECHO", "value-\(index)"], on: loop) }, on: loop)
        }.get()
        #expect(replies.map(\.text) == (0..<200).map { "value-\($0)" })
        let pong = try await client.send(["PING"], on: loop).get()
        #expect(pong == .simpleString("PONG"))
    }

    @Test func serverErrorsFailTheCommandOnly() async throws {
        let server = try await RedisServer()
        let client = try Self.client(server)
        defer { client.close() }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        await #expect(throws: RedisError.self) { try await client.send(["NOSUCHCOMMAND"], on: loop).get() }
        #expect(try await client.send(["SET", "k", "v"], on: loop).get() == .simpleString("OK"))
        #expect(try await client.send(["GET", "k"], on: loop).get().text == "v")
    }

    @Test func authenticatesWithAPassword() async throws {
        let server = try await RedisServer(arguments: ["--requirepass", "s3cret"])
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let good = try Self.client(server, password: "s3cret")
        defer { good.close() }
        #expect(try await good.send(["PING"], on: loop).get() == .simpleString("PONG"))
        // A wrong password fails the connection (and so the command), saying the server refused it.
        let wrong = try Self.client(server, password: "nope")
        defer { wrong.close() }
        do {
            _ = try await wrong.send(["PING"], on: loop).get()
            Issue.record("a wrong password was accepted")
        } catch let error as RedisError {
            guard case .connectionFailed(let why) = error else { throw error }
            #expect(why.contains("WRONGPASS") || why.contains("invalid"))
        }
        // No password at all: the server answers NOAUTH.
        let none = try Self.client(server)
        defer { none.close() }
        await #expect(throws: RedisError.self) { try await none.send(["GET", "k"], on: loop).get() }
    }

    @Test func aCommandWithoutReplyTimesOutAndTheClientRecovers() async throws {
        let server = try await RedisServer(arguments: ["--enable-debug-command", "yes"])
        let client = try Self.client(server, commandTimeout: .milliseconds(200))
        defer { client.close() }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        #expect(try await client.send(["PING"], on: loop).get() == .simpleString("PONG"))
        do {
            _ = try await client.send(["DEBUG", "SLEEP", "1"], on: loop).get()
            Issue.record("a reply came after its deadline")
        } catch let error as RedisError {
            #expect(error == .timedOut)
        }
        // The timed-out connection was closed; the next command gets a fresh one once the server answers again.
        var answered = false
        for _ in 0..<50 where !answered {
            answered = (try? await client.send(["PING"], on: loop).get()) == .simpleString("PONG")
            if !answered { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(answered)
    }

    @Test func anUnreachableServerFailsFastThenRecovers() async throws {
        let server = try await RedisServer()
        let client = try Self.client(server)
        defer { client.close() }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        #expect(try await client.send(["PING"], on: loop).get() == .simpleString("PONG"))
        server.stop()
        var errors: [RedisError] = []
        for _ in 0..<3 {
            do { _ = try await client.send(["PING"], on: loop).get() } catch let error as RedisError { errors.append(error) }
        }
        #expect(errors.count == 3)
        // After a refused connection the pool backs off and fails commands at once, saying so.
        #expect(errors.contains { if case .backingOff = $0 { true } else { false } })
        try await server.start()
        var answered = false
        for _ in 0..<50 where !answered {
            answered = (try? await client.send(["PING"], on: loop).get()) == .simpleString("PONG")
            if !answered { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(answered)
    }

    @Test func scriptsRunBySHAAndAreReloadedAfterAFlush() async throws {
        let server = try await RedisServer()
        let client = try Self.client(server)
        defer { client.close() }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let script = RedisScript("return tonumber(ARGV[1]) + 1")
        #expect(script.sha1 == "b7be0a850e2db3a846c2a50affe4a993c4fabbcd")  // sha1sum of the source
        #expect(try await script.run(keys: [], arguments: [Array("41".utf8)], on: client, eventLoop: loop).get() == .integer(42))
        let known = try await client.send(["SCRIPT", "EXISTS", script.sha1], on: loop).get()
        #expect(known == .array([.integer(1)]))
        _ = try await client.send(["SCRIPT", "FLUSH"], on: loop).get()
        #expect(try await script.run(keys: [], arguments: [Array("1".utf8)], on: client, eventLoop: loop).get() == .integer(2))
    }
}
