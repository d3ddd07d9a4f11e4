public import Logging
public import NIOCore

/// A SwiftNIO handler that speaks TLS through OpenSSL: ciphertext below it, plaintext above it.
///
/// It runs the handshake (with a time limit), fires `TLSHandshakeCompleted` with the verified peer certificate
/// to the handlers above, holds back plaintext writes until the handshake is done, and ends connections with
/// close_notify. It never reads on its own: `read` events pass through unchanged, so a handler above that stops
/// reading (for example because the channel is not writable) stops the socket reads as well.
public final class TLSHandler: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    /// Plaintext is encrypted and decrypted in pieces of at most this size, so one huge write does not become one
    /// huge ciphertext buffer.
    private static let chunkSize = 64 * 1024
    /// Writes are coalesced (copied together) only while the result stays within one TLS record; a larger write is
    /// encrypted as it is, without a copy.
    private static let recordSize = 16 * 1024
    /// How long our close_notify may take to leave before the connection is closed anyway.
    private static let closeTimeout = TimeAmount.seconds(5)

    private let tlsContext: TLSContext
    private let admitsFailureLog: (@Sendable (String) -> Int?)?
    private let serverHostname: String?
    private let logger: Logger
    /// Every lifecycle transition is decided there; this handler performs the actions.
    private var machine = TLSStateMachine()
    private var closeTimer: Scheduled<Void>?
    private var connection: TLSConnection?
    private var bufferedWrites: [(data: ByteBuffer, promise: EventLoopPromise<Void>?)] = []
    /// Plaintext written since the last flush, coalesced: encrypted at flush into as few records as possible.
    private var unflushed: ByteBuffer?
    private var unflushedPromises: [EventLoopPromise<Void>] = []
    private var flushRequested = false
    private var receivedCloseNotify = false
    private var handshakeTimer: Scheduled<Void>?
    private var peer = "unknown"
    private let peerAddress: String?
    /// The channel's allocator, taken once: asked through the channel on every read and write, it is a call through
    /// the channel's existential and an event-loop check each time.
    private var allocator = ByteBufferAllocator()

    /// What the handshake negotiated, once it is complete.
    public private(set) var handshakeResult: TLSHandshakeCompleted?

    /// The handshake's result with the peer's certificate verified again against `trust` (its CAs and CRLs as they
    /// are now), for a connection open across a reload; nil before the handshake completed.
    public func handshakeRechecked(against trust: TLSContext) -> TLSHandshakeCompleted? {
        guard handshakeResult != nil, let connection else { return nil }
        handshakeResult = connection.handshakeSummary(checkedAgainst: trust)
        return handshakeResult
    }

    /// A handler for one connection. `serverHostname` (clients only) is sent as SNI and checked against the
    /// server's certificate.
    /// `admitsFailureLog`, given a failure's kind, says whether to log it now and how many of that kind were held back
    /// since the last line (nil: not now); without it every failure is logged. A listener passes its throttle, so that
    /// a flood of bad handshakes is not a flood of lines (the counters still count every one).
    /// `peerAddress` is how logs name the peer (nil: the connection's remote address; a load balancer's connection
    /// names the client it carries).
    public init(
        context: TLSContext, serverHostname: String? = nil, logger: Logger,
        admitsFailureLog: (@Sendable (String) -> Int?)? = nil, peerAddress: String? = nil
    ) {
        self.peerAddress = peerAddress
        self.tlsContext = context
        self.serverHostname = serverHostname
        self.logger = logger
        self.admitsFailureLog = admitsFailureLog
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        allocator = context.channel.allocator
        if context.channel.isActive { start(context: context) }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        // Timers must not outlive the handler.
        handshakeTimer?.cancel()
        handshakeTimer = nil
        closeTimer?.cancel()
        closeTimer = nil
    }

    public func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        let wasActive = machine.state == .active
        if case .inactive(duringHandshake: true) = machine.channelInactive() {
            logger.debug("TLS connection closed during the handshake", metadata: ["peer.address": "\(peer)"])
            TLSHandshakeCounters.shared.record(result: "failure", version: "unknown", reason: "closed")
            failBufferedWrites(TLSError.closedDuringHandshake)
        } else if wasActive && !receivedCloseNotify {
            logger.trace("TLS connection closed without close_notify", metadata: ["peer.address": "\(peer)"])
            if tlsContext.role == .client {
                // Towards a server, the end of the connection may be the end of a response (one without a length):
                // said before the layers above learn of the close, so that they do not take a cut for the end.
                context.fireErrorCaught(TLSError.uncleanShutdown)
            }
        }
        failBufferedWrites(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let connection else { return }
        connection.receive(unwrapInboundIn(data))
        switch machine.bytesReceived() {
        case .continueHandshake: advanceHandshake(context: context)
        case .readApplicationData: readApplicationData(context: context)
        default: break
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        flushNetworkOutput(context: context)
        context.fireChannelReadComplete()
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if machine.state == .handshaking, let event = event as? ChannelEvent, event == .inputClosed {
            fail(context: context, error: .closedDuringHandshake)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch machine.write() {
        case .holdWrite:
            bufferedWrites.append((unwrapOutboundIn(data), promise))
        case .bufferWrite:
            var plaintext = unwrapOutboundIn(data)
            if let pending = unflushed, pending.readableBytes + plaintext.readableBytes > Self.recordSize {
                // Too much to coalesce: what is pending is encrypted now (sent at the flush), the new write is kept as is.
                encryptUnflushed(context: context)
            }
            if unflushed == nil {
                unflushed = plaintext
            } else {
                unflushed!.writeBuffer(&plaintext)
            }
            if let promise { unflushedPromises.append(promise) }
        default:
            promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    /// Encrypts everything written since the last flush as one piece (one TLS record per 16 KiB, not one per
    /// write) and completes its writes' promises once the ciphertext is written.
    private func encryptUnflushed(context: ChannelHandlerContext) {
        guard let plaintext = unflushed else { return }
        unflushed = nil
        let promises = unflushedPromises
        unflushedPromises = []
        var combined: EventLoopPromise<Void>?
        if promises.count == 1 {
            combined = promises[0]
        } else if !promises.isEmpty {
            let promise = context.eventLoop.makePromise(of: Void.self)
            promise.futureResult.whenComplete { result in
                for waiting in promises { waiting.completeWith(result) }
            }
            combined = promise
        }
        encryptAndWrite(context: context, plaintext: plaintext, promise: combined)
    }

    public func flush(context: ChannelHandlerContext) {
        switch machine.flush() {
        case .flushAfterHandshake:
            flushRequested = true
        case .encryptAndFlush:
            encryptUnflushed(context: context)
            context.flush()
        default:
            context.flush()
        }
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch machine.closeRequested(mode) {
        case .sendCloseNotify(let mode):
            sendCloseNotify(context: context, mode: mode, promise: promise)
        case .abortHandshake:
            handshakeTimer?.cancel()
            failBufferedWrites(ChannelError.ioOnClosedChannel)
            context.close(mode: .all, promise: promise)
        case .forwardClose(let mode):
            context.close(mode: mode, promise: promise)
        default:
            context.close(mode: mode, promise: promise)
        }
    }

    /// close_notify, then the channel closes in `mode` (`.output`: the write side only).
    private func sendCloseNotify(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // Writes never flushed are dropped, as NIO drops unflushed writes on close.
        if mode == .all { failBufferedWrites(ChannelError.ioOnClosedChannel) }
        connection?.shutdown()
        closeAfterSending(context: context, mode: mode, promise: promise)
    }

    // MARK: - Handshake

    private func start(context: ChannelHandlerContext) {
        guard case .startHandshake = machine.channelActive() else { return }
        peer = peerAddress ?? context.remoteAddress?.hostAndPort ?? "unknown"
        do {
            connection = try TLSConnection(context: tlsContext, serverHostname: serverHostname)
        } catch {
            _ = machine.failed()
            logger.error("cannot start TLS: \(error)", metadata: ["peer.address": "\(peer)"])
            context.fireErrorCaught(error)
            context.close(promise: nil)
            return
        }
        let limit = tlsContext.configuration.handshakeTimeout
        handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(limit)) {
            if self.machine.state == .handshaking {
                self.fail(context: context, error: .handshakeTimedOut(seconds: limit.components.seconds))
            }
        }
        if tlsContext.role == .client { advanceHandshake(context: context) }
    }

    private func advanceHandshake(context: ChannelHandlerContext) {
        guard let connection else { return }
        switch connection.handshake() {
        case .incomplete:
            flushNetworkOutput(context: context)
        case .complete:
            handshakeTimer?.cancel()
            guard case .completeHandshake = machine.handshakeCompleted() else { return }
            flushNetworkOutput(context: context)
            let summary = connection.handshakeSummary()
            handshakeResult = summary
            TLSHandshakeCounters.shared.record(
                result: "success", version: summary.protocolVersion, reason: summary.sessionReused ? "resumed" : "full")
            logger.debug(
                "TLS handshake completed",
                metadata: [
                    "peer.address": "\(peer)", "tls.version": "\(summary.protocolVersion)",
                    "tls.cipher": "\(summary.cipherSuite)", "tls.resumed": "\(summary.sessionReused)",
                    "tls.peer.subject": "\(summary.peerCertificate?.leaf.subject ?? "-")",
                ])
            context.fireUserInboundEventTriggered(summary)
            writeBufferedData(context: context)
            readApplicationData(context: context)
        case .closed:
            fail(context: context, error: .closedDuringHandshake)
        case .failed(let error):
            fail(context: context, error: error)
        }
    }

    /// Logs the failure, sends any alert OpenSSL queued, and closes the connection.
    private func fail(context: ChannelHandlerContext, error: TLSError) {
        let wasHandshaking = machine.state == .handshaking
        guard case .fail = machine.failed() else { return }
        handshakeTimer?.cancel()
        // Per-connection events stay at info at most, and a listener logs the first of each kind in a second (a flood
        // of bad handshakes must not become a flood of lines); the counters carry the totals.
        let version = connection?.negotiatedVersion ?? "unknown"
        if wasHandshaking {
            TLSHandshakeCounters.shared.record(result: "failure", version: version, reason: TLSHandshakeCounters.reason(error))
        }
        let reason = TLSHandshakeCounters.reason(error)
        let kind = wasHandshaking ? "TLS handshake refused" : "TLS connection failed"
        // Without a throttle every failure is logged; with one, only what it admits: the first line a second for each
        // kind and text of failure (a flood repeats one text; a revoked certificate's refusal still gets its own line).
        let admitted: Int? = admitsFailureLog.map { $0("\(kind)/\(String("\(error)".prefix(240)))") } ?? 0
        if let heldBack = admitted {
            logger.info(
                "\(kind) from \(peer): \(error)",
                metadata: [
                    "peer.address": "\(peer)", "tls.version": "\(version)", "tls.failure": "\(reason)",
                    "similar.failures.held.back": "\(heldBack)",
                ])
        }
        failBufferedWrites(error)
        context.fireErrorCaught(error)
        closeAfterSending(context: context, mode: .all, promise: nil)
    }

    // MARK: - Application data

    private func readApplicationData(context: ChannelHandlerContext) {
        guard let connection else { return }
        var plaintext = allocator.buffer(capacity: 0)
        func deliver() {
            if plaintext.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(plaintext))
                plaintext = allocator.buffer(capacity: 0)
            }
        }
        reading: while true {
            switch connection.read(into: &plaintext, limit: 16 * 1024) {
            case .complete:
                if plaintext.readableBytes >= Self.chunkSize { deliver() }
            case .incomplete:
                deliver()
                break reading
            case .closed:
                deliver()
                peerSentCloseNotify(context: context)
                break reading
            case .failed(let error):
                deliver()
                fail(context: context, error: error)
                return
            }
        }
        // Post-handshake messages (session tickets, key updates) may have produced output.
        flushNetworkOutput(context: context)
    }

    private func peerSentCloseNotify(context: ChannelHandlerContext) {
        guard !receivedCloseNotify else { return }
        receivedCloseNotify = true
        let halfClosureAllowed = (try? context.channel.syncOptions?.getOption(ChannelOptions.allowRemoteHalfClosure)) ?? false
        switch machine.closeNotifyReceived(halfClosureAllowed: halfClosureAllowed) {
        case .fireInputClosed:
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        case .sendCloseNotify(let mode):
            sendCloseNotify(context: context, mode: mode, promise: nil)
        default:
            break
        }
    }

    private func encryptAndWrite(context: ChannelHandlerContext, plaintext: ByteBuffer, promise: EventLoopPromise<Void>?) {
        guard let connection else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        var remaining = plaintext
        repeat {
            let piece = remaining.readSlice(length: min(Self.chunkSize, remaining.readableBytes))!
            let step = piece.withUnsafeReadableBytes { connection.write($0) }
            if case .failed(let error) = step {
                promise?.fail(error)
                fail(context: context, error: error)
                return
            }
            if let ciphertext = connection.takeNetworkOutput(allocator: allocator) {
                context.write(wrapOutboundOut(ciphertext), promise: remaining.readableBytes == 0 ? promise : nil)
            } else if remaining.readableBytes == 0 {
                promise?.succeed(())
            }
        } while remaining.readableBytes > 0
    }

    private func writeBufferedData(context: ChannelHandlerContext) {
        let writes = bufferedWrites
        bufferedWrites = []
        for write in writes {
            encryptAndWrite(context: context, plaintext: write.data, promise: write.promise)
        }
        if flushRequested {
            flushRequested = false
            context.flush()
        }
    }

    private func failBufferedWrites(_ error: any Error) {
        let writes = bufferedWrites
        bufferedWrites = []
        for write in writes { write.promise?.fail(error) }
        let promises = unflushedPromises
        unflushed = nil
        unflushedPromises = []
        for promise in promises { promise.fail(error) }
    }

    // MARK: - Network output

    private func flushNetworkOutput(context: ChannelHandlerContext) {
        guard let output = connection?.takeNetworkOutput(allocator: allocator) else { return }
        context.writeAndFlush(wrapOutboundOut(output), promise: nil)
    }

    /// Sends whatever OpenSSL queued (close_notify, an alert), then closes; a peer that does not take the bytes
    /// within `closeTimeout` is closed on anyway.
    private func closeAfterSending(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard let output = connection?.takeNetworkOutput(allocator: allocator) else {
            context.close(mode: mode, promise: promise)
            return
        }
        var pendingPromise = promise
        var closed = false
        let closeOnce = {
            guard !closed else { return }
            closed = true
            let promise = pendingPromise
            pendingPromise = nil
            context.close(mode: mode, promise: promise)
        }
        let timer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.closeTimeout) { closeOnce() }
        closeTimer = timer
        context.writeAndFlush(wrapOutboundOut(output)).assumeIsolated().whenComplete { _ in
            timer.cancel()
            closeOnce()
        }
    }
}

@available(*, unavailable)
extension TLSHandler: Sendable {}
