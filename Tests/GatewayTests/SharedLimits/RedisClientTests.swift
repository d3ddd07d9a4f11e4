import Logging
import NIOCore
import NIOPosix
import Redis
import TLS
import TestSupport
import Testing

/// The hand-written Redis client against a real `redis-server` on loopback.
@Suite struct RedisClientTests {
    static func client(
        _ server: RedisServer, password: String? = nil, commandTimeout: Duration = .seconds(2), backoff: Duration = .milliseconds(20)
    ) throws -> RedisClient {
        var settings = try RedisSettings(url: server.url)
        settings.password = password
        settings.commandTimeout = commandTimeout
        settings.minimumBackoff = backoff
        settings.maximumBackoff = backoff
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
        // The first command also connects: on a loaded machine (the whole suite at once) that outlasted the 200 ms
        // deadline once (a clean-clone run failed so). It is tried until the connection is up, a bounded number of times.
        var connected = false
        for _ in 0..<50 where !connected {
            connected = (try? await client.send(["PING"], on: loop).get()) == .simpleString("PONG")
            if !connected { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(connected)
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
        // A backoff long enough that the commands below, sent back to back, surely fall within it.
        let client = try Self.client(server, backoff: .milliseconds(600))
        defer { client.close() }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        #expect(try await client.send(["PING"], on: loop).get() == .simpleString("PONG"))
        server.stop()
        // Commands sent on the loop, each as soon as the one before has failed: no scheduling delay between them can
        // outlast the backoff, however busy the machine.
        let errors = try await loop.flatSubmit { Self.failures(of: ["PING"], count: 4, on: client, loop: loop) }.get()
        #expect(errors.count == 4, "\(errors)")
        // After a refused connection the pool backs off and fails commands at once, saying so.
        #expect(errors.contains { if case .backingOff = $0 { true } else { false } }, "\(errors)")
        try await server.start()
        var answered = false
        for _ in 0..<100 where !answered {
            answered = (try? await client.send(["PING"], on: loop).get()) == .simpleString("PONG")
            if !answered { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(answered)
    }

    /// Sends `command` `count` times back to back on `loop`, each after the previous one has failed; the errors, up
    /// to the first success.
    private static func failures(
        of command: [String], count: Int, on client: RedisClient, loop: any EventLoop, soFar: [RedisError] = []
    ) -> EventLoopFuture<[RedisError]> {
        guard count > 0 else { return loop.makeSucceededFuture(soFar) }
        return client.send(command, on: loop).map { _ in soFar }.flatMapError { error in
            failures(
                of: command, count: count - 1, on: client, loop: loop,
                soFar: soFar + [(error as? RedisError) ?? .connectionFailed("\(error)")])
        }
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

/// TLS and ACL users, against a real `redis-server`.
@Suite struct RedisSecurityTests {
    static func tlsClient(_ server: RedisServer, ca: String, certificate: (String, String)? = nil) throws -> RedisClient {
        var settings = try RedisSettings(url: server.url)
        var configuration = TLSConfiguration(
            certificateChainFile: certificate?.0, privateKeyFile: certificate?.1, trustedCABundles: [.init(label: "redis", path: ca)])
        configuration.verifyServerCertificate = true
        settings.tls = try TLSContext(role: .client, configuration: configuration)
        settings.minimumBackoff = .milliseconds(20)
        return RedisClient(settings: settings, logger: Logger(label: "test.redis"))
    }

    @Test func speaksTLSThroughTheGatewaysOpenSSLClient() async throws {
        let server = try await RedisServer(tls: true)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let client = try Self.tlsClient(server, ca: DevPKI.gatewayCA)
        defer { client.close() }
        #expect(try await client.send(["ECHO", "over tls"], on: loop).get().text == "over tls")
        // A server whose certificate the configured CA did not sign is refused.
        let distrustful = try Self.tlsClient(server, ca: DevPKI.tenantCA("acme"))
        defer { distrustful.close() }
        do {
            _ = try await distrustful.send(["PING"], on: loop).get()
            Issue.record("a server certificate from an untrusted CA was accepted")
        } catch let error as RedisError {
            guard case .connectionFailed = error else { throw error }
        }
    }

    @Test func presentsAClientCertificateWhenTheServerAsksForOne() async throws {
        let server = try await RedisServer(tls: true, clientCA: DevPKI.tenantCA("acme"))
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let agent = DevPKI.agent("acme", "bot1")
        let client = try Self.tlsClient(server, ca: DevPKI.gatewayCA, certificate: (agent.certificate, agent.key))
        defer { client.close() }
        #expect(try await client.send(["PING"], on: loop).get() == .simpleString("PONG"))
        let anonymous = try Self.tlsClient(server, ca: DevPKI.gatewayCA)
        defer { anonymous.close() }
        await #expect(throws: RedisError.self) { try await anonymous.send(["PING"], on: loop).get() }
    }

    @Test func authenticatesAsAnACLUser() async throws {
        let server = try await RedisServer(arguments: ["--user", "default", "off", "--user", "mcpgw", "on", ">pa55", "~mcpgw:*", "+@all"])
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        var settings = try RedisSettings(url: "redis://mcpgw@127.0.0.1:\(server.port)")
        settings.password = "pa55"
        let client = RedisClient(settings: settings, logger: Logger(label: "test.redis"))
        defer { client.close() }
        #expect(try await client.send(["SET", "mcpgw:k", "v"], on: loop).get() == .simpleString("OK"))
        // The ACL applies: keys outside the user's pattern are refused (as a server error, not a broken connection).
        do {
            _ = try await client.send(["SET", "other:k", "v"], on: loop).get()
            Issue.record("the ACL did not apply")
        } catch let error as RedisError {
            guard case .server(let text) = error else { throw error }
            #expect(text.hasPrefix("NOPERM"))
        }
    }
}
