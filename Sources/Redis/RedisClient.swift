public import Logging
public import NIOCore
import NIOPosix
import Synchronization
import TLS

/// A small Redis client written for the gateway's event loops: RESP2 over SwiftNIO, optionally through the
/// gateway's own OpenSSL TLS client, with a few pipelined connections per event loop.
///
/// Hand-written because no Swift Redis client is available to this project, and hiredis's blocking or callback API
/// would need its own thread and a hop per command. A command sent from an event loop goes out on a connection of
/// that loop and its reply comes back on it, with no thread hop.
///
/// Failures: every command has a deadline (`commandTimeout`); a connection that fails, times out or answers
/// nonsense is closed with every command waiting on it failed. After a failed connection attempt the client waits
/// (100 ms doubling to 2 s by default) before trying again, and fails commands at once meanwhile, so an unreachable
/// server costs callers nothing but an error. The wait is the client's, not one loop's: a connection made on any
/// loop ends it for all of them. Recovery needs no action: the next command after the wait connects again.
public final class RedisClient: Sendable {
    /// The settings in use.
    public let settings: RedisSettings
    private let pools = Mutex<[ObjectIdentifier: LoopPool]>([:])
    private let backoff = Backoff()
    private let logger: Logger

    /// A client of the server `settings` name; connections are made on demand, on the loops commands come from.
    public init(settings: RedisSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    /// Sends one command (its arguments as bytes) on a connection of `eventLoop`; the reply comes back there. An
    /// error reply fails the future with `RedisError.server`.
    public func send(_ arguments: [[UInt8]], on eventLoop: any EventLoop) -> EventLoopFuture<RESPValue> {
        let pool = self.pool(for: eventLoop)
        if eventLoop.inEventLoop { return pool.send(arguments) }
        return eventLoop.flatSubmit { pool.send(arguments) }
    }

    /// Sends a command given as text arguments.
    public func send(_ arguments: [String], on eventLoop: any EventLoop) -> EventLoopFuture<RESPValue> {
        send(arguments.map { Array($0.utf8) }, on: eventLoop)
    }

    /// Closes every connection.
    public func close() {
        let all = pools.withLock { pools in
            defer { pools.removeAll() }
            return Array(pools.values)
        }
        for pool in all { pool.eventLoop.execute { pool.closeAll() } }
    }

    private func pool(for eventLoop: any EventLoop) -> LoopPool {
        pools.withLock { pools in
            let key = ObjectIdentifier(eventLoop)
            if let pool = pools[key] { return pool }
            let pool = LoopPool(eventLoop: eventLoop, settings: settings, backoff: backoff, logger: logger)
            pools[key] = pool
            return pool
        }
    }
}

/// One event loop's connections. Touched only on that loop (every entry point runs there), hence `@unchecked`.
final class LoopPool: @unchecked Sendable {
    let eventLoop: any EventLoop
    private let settings: RedisSettings
    private let logger: Logger
    private var ready: [(channel: any Channel, handler: RedisCommandHandler)] = []
    private var connecting: EventLoopFuture<any Channel>?
    private var closed = false
    private let backoff: Backoff
    private var next = 0

    init(eventLoop: any EventLoop, settings: RedisSettings, backoff: Backoff, logger: Logger) {
        self.eventLoop = eventLoop
        self.settings = settings
        self.backoff = backoff
        self.logger = logger
    }

    func send(_ arguments: [[UInt8]]) -> EventLoopFuture<RESPValue> {
        eventLoop.preconditionInEventLoop()
        // A connection whose close is still being delivered (its commands failed, its close callbacks not yet run)
        // takes no more commands.
        ready.removeAll { !$0.channel.isActive }
        // A further connection while the pool is short, unless one is on its way or the server is failing.
        let waitLeft = backoff.secondsLeft()
        if ready.count < settings.poolSize, connecting == nil, waitLeft == 0 { connect() }
        if !ready.isEmpty {
            next = (next + 1) % ready.count
            return write(arguments, to: ready[next].channel)
        }
        if let connecting {
            return connecting.flatMap { [self] channel in write(arguments, to: channel) }
        }
        return eventLoop.makeFailedFuture(RedisError.backingOff(secondsLeft: waitLeft))
    }

    /// Closes every connection, and any still being made when it is made.
    func closeAll() {
        closed = true
        for connection in ready { connection.channel.close(promise: nil) }
        ready.removeAll()
    }

    private func write(_ arguments: [[UInt8]], to channel: any Channel, deadline: NIODeadline? = nil) -> EventLoopFuture<RESPValue> {
        let promise = eventLoop.makePromise(of: RESPValue.self)
        let command = RedisCommandHandler.Command(
            arguments: arguments, promise: promise, deadline: deadline ?? .now() + TimeAmount(settings.commandTimeout))
        channel.writeAndFlush(command, promise: nil)
        return promise.futureResult.flatMapThrowing { reply in
            if let error = reply.errorText { throw RedisError.server(error) }
            return reply
        }
    }

    /// Opens one connection (TLS, `AUTH`, `SELECT`); on failure, starts the next backoff.
    private func connect() {
        let settings = self.settings
        let logger = self.logger
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(settings.connectTimeout))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let tls = settings.tls {
                        try pipeline.addHandler(TLSHandler(context: tls, serverHostname: settings.serverName, logger: logger))
                    }
                    try pipeline.addHandler(RedisCommandHandler())
                }
            }
        // TCP, TLS and the handshake's commands, all within the connect timeout.
        let deadline = NIODeadline.now() + TimeAmount(settings.connectTimeout)
        let attempt = bootstrap.connect(host: settings.host, port: settings.port).flatMap { [self] channel in
            handshake(channel, deadline: deadline).map { channel }.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw error
            }
        }
        .flatMapErrorThrowing { error -> any Channel in
            throw (error as? RedisError).map { error in
                if case .server(let text) = error { return RedisError.connectionFailed("refused: \(text)") }
                return error
            } ?? RedisError.connectionFailed("\(error)")
        }
        connecting = attempt
        attempt.whenComplete { [self] result in
            connecting = nil
            switch result {
            case .success(let channel):
                backoff.succeeded()
                guard !closed else { return channel.close(promise: nil) }
                let handler = try! channel.pipeline.syncOperations.handler(type: RedisCommandHandler.self)
                ready.append((channel, handler))
                channel.closeFuture.whenComplete { [self] _ in ready.removeAll { $0.channel === channel } }
            case .failure:
                backoff.failed(minimum: settings.minimumBackoff, maximum: settings.maximumBackoff)
            }
        }
    }

    /// `AUTH` and `SELECT` — or `PING` when neither is needed — as the first commands of a connection: it is in the
    /// pool only once the server has answered (so a TLS handshake or a password that fails counts as a failed
    /// connection, and backs off). Their deadline is the connection's: TCP, TLS and these answers within
    /// `connectTimeout`.
    private func handshake(_ channel: any Channel, deadline: NIODeadline) -> EventLoopFuture<Void> {
        var commands: [[[UInt8]]] = []
        if let password = settings.password {
            commands.append([Array("AUTH".utf8)] + (settings.username.map { [Array($0.utf8)] } ?? []) + [Array(password.utf8)])
        }
        if settings.database != 0 { commands.append(["SELECT", String(settings.database)].map { Array($0.utf8) }) }
        if commands.isEmpty { commands.append([Array("PING".utf8)]) }
        var future = eventLoop.makeSucceededVoidFuture()
        for command in commands {
            future = future.flatMap { [self] in write(command, to: channel, deadline: deadline).map { _ in } }
        }
        return future
    }
}

/// The client's wait between connection attempts after failures, shared by its loops' pools.
final class Backoff: Sendable {
    private let state = Mutex<(failures: Int, until: UInt64)>((0, 0))

    /// Seconds until connecting may be tried again (0: now).
    func secondsLeft() -> Double {
        let now = NIODeadline.now().uptimeNanoseconds
        return state.withLock { state in state.until > now ? Double(state.until - now) / 1e9 : 0 }
    }

    /// A connection succeeded: no more waiting, anywhere.
    func succeeded() { state.withLock { $0 = (0, 0) } }

    /// A connection failed: the wait doubles from `minimum` up to `maximum`, with ±20 % jitter so that replicas
    /// and loops do not reconnect in lockstep.
    func failed(minimum: Duration, maximum: Duration) {
        let seconds = { (duration: Duration) in
            Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        }
        state.withLock { state in
            state.failures += 1
            let wait = min(seconds(maximum), seconds(minimum) * Double(1 << min(state.failures - 1, 20)))
            state.until = NIODeadline.now().uptimeNanoseconds + UInt64(wait * Double.random(in: 0.8...1.2) * 1e9)
        }
    }
}
