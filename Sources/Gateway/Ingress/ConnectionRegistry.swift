import NIOConcurrencyHelpers
import NIOCore

/// The open client connections of one listener: counted in all and per source (an IPv4 address or an IPv6 /64:
/// `ClientSource`, so one source cannot hold every slot), and kept so that shutdown can drain and close them.
final class ConnectionRegistry: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
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

    /// Admits `channel` within the limits and tracks it until it closes; nil when admitted.
    func admit(_ channel: any Channel, maximum: Int, perSource: Int) -> Refusal? {
        let source = ClientSource.key(channel.remoteAddress)
        let id = ObjectIdentifier(channel)
        let refusal: Refusal? = state.withLockedValue { state in
            if state.channels.count >= maximum {
                state.refused += 1
                return .listenerFull
            }
            if state.perSource[source, default: 0] >= perSource {
                state.refused += 1
                return .sourceFull
            }
            state.channels[id] = channel
            state.perSource[source, default: 0] += 1
            return nil
        }
        guard refusal == nil else { return refusal }
        channel.closeFuture.whenComplete { _ in
            self.state.withLockedValue { state in
                state.channels[id] = nil
                let left = state.perSource[source, default: 1] - 1
                state.perSource[source] = left > 0 ? left : nil
            }
        }
        return nil
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
