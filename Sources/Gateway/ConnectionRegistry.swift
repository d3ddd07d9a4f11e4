import NIOConcurrencyHelpers
import NIOCore

/// The open client connections of one listener, so that shutdown can close them.
final class ConnectionRegistry: Sendable {
    private let channels = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])

    /// Tracks `channel` until it closes.
    func track(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        channels.withLockedValue { $0[id] = channel }
        channel.closeFuture.whenComplete { _ in
            self.channels.withLockedValue { _ = $0.removeValue(forKey: id) }
        }
    }

    /// How many connections are open.
    var count: Int { channels.withLockedValue { $0.count } }

    /// Asks every connection to close as soon as it has no request in flight.
    func drainAll() {
        for channel in channels.withLockedValue({ Array($0.values) }) {
            channel.pipeline.fireUserInboundEventTriggered(GatewayDraining())
        }
    }

    /// Closes every open connection now (TLS connections send close_notify first).
    func closeAll() {
        for channel in channels.withLockedValue({ Array($0.values) }) {
            channel.close(promise: nil)
        }
    }
}
