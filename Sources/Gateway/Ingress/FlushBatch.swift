import NIOCore
import NIOPosix

/// Flushes collected while an event loop handles one round of ready sockets, sent together once the round is over.
///
/// On a busy gateway one round handles several connections. Flushing each at once wakes the peer (upstream or
/// client) for every write, and on loopback or a virtual machine a wake-up of a sleeping peer costs about as much as
/// the gateway's own work on a request. Sent together, the writes of one round find the peer awake after the first.
/// The delay is the rest of the round: no timer is involved, and a lone request is flushed as soon as it is handled.
/// Anything that closes a connection flushes it first (`ClientResponseEncoder`, `MCPConnectionHandler.close`).
final class FlushBatch {
    // One batch per event-loop thread; a batch is only touched on its thread.
    nonisolated(unsafe) private static let perThread = ThreadSpecificVariable<FlushBatch>()

    private let eventLoop: any EventLoop
    private var channels: [any Channel] = []
    /// The list being flushed, kept to reuse its storage.
    private var flushing: [any Channel] = []
    private var scheduled = false

    private init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    /// Flushes `channel` at the end of the current round of its event loop; at once when called off that loop.
    static func flushSoon(_ channel: any Channel) {
        let loop = channel.eventLoop
        guard loop.inEventLoop else { return channel.flush() }
        let batch: FlushBatch
        if let existing = perThread.currentValue, existing.eventLoop === loop {
            batch = existing
        } else if let existing = perThread.currentValue, existing.scheduled {
            // Another loop on this thread has a round under way (only test loops share threads): no batching.
            return channel.flush()
        } else {
            batch = FlushBatch(eventLoop: loop)
            perThread.currentValue = batch
        }
        batch.channels.append(channel)
        guard !batch.scheduled else { return }
        batch.scheduled = true
        loop.assumeIsolated().execute { batch.run() }
    }

    private func run() {
        scheduled = false
        swap(&channels, &flushing)
        for channel in flushing { channel.flush() }
        flushing.removeAll(keepingCapacity: true)
    }
}
