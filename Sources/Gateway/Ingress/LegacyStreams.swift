import NIOCore
import Synchronization

/// The legacy HTTP+SSE streams (`GET /sse`) open in this process, by their owner and the upstream message endpoint
/// each one announced (two tenants' upstreams may announce the same path).
/// In that transport a POST gets only `202` and its answer travels on the stream, so a message the gateway refuses
/// must be answered there too: the refusal's JSON-RPC error is written onto the caller's stream, between events.
final class LegacyStreams: Sendable {
    /// Writes one SSE event onto a stream (on that stream's event loop), then calls the second argument, if any, once
    /// the event has been written out (or dropped).
    typealias Writer = @Sendable (ByteBuffer, (@Sendable () -> Void)?) -> Void

    private struct Stream {
        let owner: String
        let write: Writer
        /// Whether the stream's client is keeping up (its connection writable); read from any thread.
        let isWritable: @Sendable () -> Bool
        let token: UInt64
    }

    private let streams = Mutex<[Key: Stream]>([:])

    private struct Key: Hashable {
        let owner: String
        let endpoint: String
    }
    private let tokens = Atomic<UInt64>(0)

    /// Registers the stream of `owner` (tenant/agent) that announced `upstreamEndpoint`; returns a token for `remove`.
    /// `isWritable` says whether the stream's client keeps up with what is written to it.
    func add(
        _ upstreamEndpoint: String, owner: String, isWritable: @escaping @Sendable () -> Bool, write: @escaping Writer
    ) -> UInt64 {
        let token = tokens.wrappingAdd(1, ordering: .relaxed).newValue
        let key = Key(owner: owner, endpoint: upstreamEndpoint)
        streams.withLock { $0[key] = Stream(owner: owner, write: write, isWritable: isWritable, token: token) }
        return token
    }

    /// Forgets the stream of `owner`, unless another one has taken its place since.
    func remove(_ upstreamEndpoint: String, owner: String, token: UInt64) {
        let key = Key(owner: owner, endpoint: upstreamEndpoint)
        streams.withLock { streams in
            if streams[key]?.token == token { streams[key] = nil }
        }
    }

    /// Writes a JSON-RPC message as an SSE event onto the stream of `owner` that announced `upstreamEndpoint`; false
    /// when there is no such stream here, or when its client is not reading what the stream already holds (the
    /// message is then answered on the POST itself, instead of piling up in the gateway's memory). `written` is called
    /// once the event has been written out or dropped (not when this returns false).
    func deliver(
        _ message: [UInt8], to upstreamEndpoint: String, owner: String, written: (@Sendable () -> Void)? = nil
    ) -> Bool {
        guard let stream = streams.withLock({ $0[Key(owner: owner, endpoint: upstreamEndpoint)] }), stream.isWritable() else {
            return false
        }
        var event = ByteBuffer()
        event.writeString("event: message\ndata: ")
        event.writeBytes(message)
        event.writeString("\n\n")
        stream.write(event, written)
        return true
    }
}
