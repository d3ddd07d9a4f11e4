public import NIOCore

/// The life of one TLS connection as a value: events in, the action to perform out. `TLSHandler` performs the
/// actions; every transition is here, in one place, and tested without a channel.
///
/// ```
/// idle ─active→ handshaking ─done→ active ─close_notify in (half-closure)→ inputClosed ─close(output)→ closing
///                    │                │   └─close(output)→ outputClosed ─close_notify in→ closing
///                    │                └─close(all)→ closing ─inactive→ closed
///                    └─failure / close / inactive→ closed
/// ```
public struct TLSStateMachine: Sendable {
    /// Where the connection is.
    public enum State: Equatable, Sendable {
        /// Waiting for the channel to become active.
        case idle
        /// Handshake in progress; plaintext writes are held.
        case handshaking
        /// Application data flows both ways.
        case active
        /// The peer sent close_notify (the channel allows half-closure): we may still write.
        case inputClosed
        /// We sent close_notify (`close(mode: .output)`): we may still read.
        case outputClosed
        /// Our close_notify is leaving and the channel closes after it.
        case closing
        /// Nothing more happens.
        case closed
    }

    /// What the handler does next.
    public enum Action: Equatable, Sendable {
        /// Nothing.
        case none
        /// Create the OpenSSL connection, arm the handshake timer, and (clients) send the first flight.
        case startHandshake
        /// Feed the bytes to the handshake.
        case continueHandshake
        /// Fire the handshake result, send held writes, read data that came with the last flight.
        case completeHandshake
        /// Decrypt what arrived and pass it up.
        case readApplicationData
        /// Drop what arrived (after the peer's close_notify, or when closed).
        case ignoreInput
        /// Hold the write until the handshake is done.
        case holdWrite
        /// Hold the write until the next flush (coalesced into one piece).
        case bufferWrite
        /// Fail the write: the connection can no longer send.
        case failWrite
        /// Flush after the handshake.
        case flushAfterHandshake
        /// Encrypt what was buffered and flush.
        case encryptAndFlush
        /// Pass the flush down.
        case flushOnly
        /// Send close_notify, then close the channel in `mode`.
        case sendCloseNotify(mode: CloseMode)
        /// Stop the handshake and close now.
        case abortHandshake
        /// Pass the close down as it is.
        case forwardClose(mode: CloseMode)
        /// Tell the handlers above that input ended (once).
        case fireInputClosed
        /// The handshake failed or the connection broke: report, alert and close.
        case fail
        /// The channel closed; `duringHandshake` fails held writes as a handshake failure.
        case inactive(duringHandshake: Bool)
    }

    /// The state.
    public private(set) var state = State.idle

    /// A machine in `idle`.
    public init() {}

    /// The channel became active (or the handler was added to an active channel).
    public mutating func channelActive() -> Action {
        guard case .idle = state else { return .none }
        state = .handshaking
        return .startHandshake
    }

    /// The handshake finished successfully.
    public mutating func handshakeCompleted() -> Action {
        guard case .handshaking = state else { return .none }
        state = .active
        return .completeHandshake
    }

    /// The handshake or the connection failed (or the handshake timed out).
    public mutating func failed() -> Action {
        switch state {
        case .closed: return .none
        default:
            state = .closed
            return .fail
        }
    }

    /// Ciphertext arrived.
    public func bytesReceived() -> Action {
        switch state {
        case .handshaking: return .continueHandshake
        case .active, .outputClosed, .closing: return .readApplicationData
        case .idle, .inputClosed, .closed: return .ignoreInput
        }
    }

    /// The handler above wrote plaintext.
    public func write() -> Action {
        switch state {
        case .idle, .handshaking: return .holdWrite
        case .active, .inputClosed: return .bufferWrite
        case .outputClosed, .closing, .closed: return .failWrite
        }
    }

    /// The handler above flushed.
    public func flush() -> Action {
        switch state {
        case .idle, .handshaking: return .flushAfterHandshake
        case .active, .inputClosed: return .encryptAndFlush
        case .outputClosed, .closing, .closed: return .flushOnly
        }
    }

    /// The peer's close_notify arrived.
    public mutating func closeNotifyReceived(halfClosureAllowed: Bool) -> Action {
        switch state {
        case .active:
            if halfClosureAllowed {
                state = .inputClosed
                return .fireInputClosed
            }
            state = .closing
            return .sendCloseNotify(mode: .all)
        case .outputClosed:
            // Both directions are done.
            state = .closing
            return .sendCloseNotify(mode: .all)
        default:
            return .none
        }
    }

    /// The handler above asked to close.
    public mutating func closeRequested(_ mode: CloseMode) -> Action {
        switch (state, mode) {
        case (.active, .all), (.inputClosed, .all), (.outputClosed, .all):
            state = .closing
            return .sendCloseNotify(mode: .all)
        case (.active, .output):
            state = .outputClosed
            return .sendCloseNotify(mode: .output)
        case (.inputClosed, .output):
            state = .closing
            return .sendCloseNotify(mode: .all)
        case (.handshaking, .all):
            state = .closing
            return .abortHandshake
        case (.idle, .all):
            state = .closed
            return .forwardClose(mode: .all)
        default:
            return .forwardClose(mode: mode)
        }
    }

    /// The channel closed.
    public mutating func channelInactive() -> Action {
        let wasHandshaking = state == .handshaking
        state = .closed
        return .inactive(duringHandshake: wasHandshaking)
    }
}
