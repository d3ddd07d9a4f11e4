import NIOCore
import NIOPosix

/// Flushes collected while an event loop handles one round of ready sockets, sent together once the round is over.
///
/// On a busy gateway one round handles several connections. Flushing each at once wakes the peer (upstream or
/// client) for every write, and on loopback or a virtual machine a wake-up of a sleeping peer costs about as much as
/// the gateway's own work on a request. Sent together, the writes of one round find the peer awake after the first.
/// The delay is the rest of the round: no timer is involved, and a lone request is flushed as soon as it is handled.
final class FlushBatch {
    // Each event loop thread has its own batch; a batch is only touched on its thread.
    nonisolated(unsafe) private static let perThread = ThreadSpecificVariable<FlushBatch>()

    private var channels: [any Channel] = []
    private var scheduled = false

    /// Flushes `channel` at the end of the current round of its event loop; at once when called off that loop.
    static func flushSoon(_ channel: any Channel) {
        guard channel.eventLoop.inEventLoop else { return channel.flush() }
        let batch: FlushBatch
        if let existing = perThread.currentValue {
            batch = existing
        } else {
            batch = FlushBatch()
            perThread.currentValue = batch
        }
        batch.channels.append(channel)
        guard !batch.scheduled else { return }
        batch.scheduled = true
        channel.eventLoop.execute { batch.run() }
    }

    private func run() {
        scheduled = false
        let due = channels
        channels.removeAll(keepingCapacity: true)
        for channel in due { channel.flush() }
    }
}
