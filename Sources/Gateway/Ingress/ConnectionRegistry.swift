import NIOConcurrencyHelpers
import NIOCore

/// The open client connections of one listener: counted in all and per source (an IPv4 address or an IPv6 /64:
/// `ClientSource`, so one source cannot hold every slot), and kept so that shutdown can drain and close them.
final class ConnectionRegistry: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        /// The source each connection counts against (none yet for a proxy's connection whose header is unread).
        var sourceOf: [ObjectIdentifier: String] = [:]
        var perSource: [String: Int] = [:]
        var refused = 0
        var lastRefusalLog = NIODeadline.uptimeNanoseconds(0)
    }

    private let state = NIOLockedValueBox(State())

    /// Why a connection was not admitted.
    enum Refusal: Equatable {
        /// The listener holds its maximum.
        case listenerFull
        /// This source address holds its share.
        case sourceFull
    }

    /// Admits `channel` within the limits and tracks it until it closes; nil when admitted. With `sourceLater` (a
    /// trusted proxy's connection, whose client is named by the header it has not sent yet), it counts against the
    /// listener's maximum only, until `assignSource` names its source.
    func admit(_ channel: any Channel, maximum: Int, perSource: Int, sourceLater: Bool = false) -> Refusal? {
        let source = sourceLater ? nil : ClientSource.key(channel.remoteAddress)
        let id = ObjectIdentifier(channel)
        let refusal: Refusal? = state.withLockedValue { state in
            if state.channels.count >= maximum {
                state.refused += 1
                return .listenerFull
            }
            if let source {
                guard Self.count(&state, id, against: source, perSource: perSource) else { return .sourceFull }
            }
            state.channels[id] = channel
            return nil
        }
        guard refusal == nil else { return refusal }
        channel.closeFuture.whenComplete { _ in
            self.state.withLockedValue { state in
                state.channels[id] = nil
                guard let source = state.sourceOf.removeValue(forKey: id) else { return }
                let left = state.perSource[source, default: 1] - 1
                state.perSource[source] = left > 0 ? left : nil
            }
        }
        return nil
    }

    /// Counts a connection admitted with `sourceLater` against `source`'s share; false (the connection is then to be
    /// closed) when that source holds its share already, or the connection has closed meanwhile.
    func assignSource(_ channel: any Channel, source: String, perSource: Int) -> Bool {
        let id = ObjectIdentifier(channel)
        return state.withLockedValue { state in
            guard state.channels[id] != nil, state.sourceOf[id] == nil else { return false }
            return Self.count(&state, id, against: source, perSource: perSource)
        }
    }

    /// Counts connection `id` against `source` when the source has room (a refusal is counted otherwise).
    private static func count(_ state: inout State, _ id: ObjectIdentifier, against source: String, perSource: Int) -> Bool {
        guard state.perSource[source, default: 0] < perSource else {
            state.refused += 1
            return false
        }
        state.perSource[source, default: 0] += 1
        state.sourceOf[id] = source
        return true
    }

    /// Whether a refusal should be logged now (at most one log line a second).
    func shouldLogRefusal() -> Bool {
        let now = NIODeadline.now()
        return state.withLockedValue { state in
            guard now - state.lastRefusalLog >= .seconds(1) else { return false }
            state.lastRefusalLog = now
            return true
        }
    }

    /// How many connections are open.
    var count: Int { state.withLockedValue { $0.channels.count } }

    /// How many connections were refused at accept.
    var refusedCount: Int { state.withLockedValue { $0.refused } }

    /// Asks every connection to close as soon as it has no request in flight.
    func drainAll() {
        for channel in state.withLockedValue({ Array($0.channels.values) }) {
            channel.pipeline.fireUserInboundEventTriggered(GatewayDraining())
        }
    }

    /// Tells every connection that the TLS trust was reloaded (`TrustReloaded`).
    func trustReloaded() {
        for channel in state.withLockedValue({ Array($0.channels.values) }) {
            channel.pipeline.fireUserInboundEventTriggered(TrustReloaded())
        }
    }

    /// Closes every open connection now (TLS connections send close_notify first) and waits until they are closed,
    /// so that every exchange has written its records.
    func closeAll() async {
        let open = state.withLockedValue { Array($0.channels.values) }
        for channel in open { channel.close(promise: nil) }
        for channel in open { try? await channel.closeFuture.get() }
    }
}
