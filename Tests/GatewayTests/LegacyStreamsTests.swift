import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import Gateway

@Suite("Legacy streams registry")
struct LegacyStreamsTests {
    @Test("a refusal goes onto the caller's stream only while its client keeps up; otherwise it is answered on the POST")
    func deliveryFollowsWritability() {
        let streams = LegacyStreams()
        let writable = NIOLockedValueBox(true)
        let written = NIOLockedValueBox(0)
        _ = streams.add("/messages/?session_id=abc", owner: "acme/bot1", isWritable: { writable.withLockedValue { $0 } }) { _, _ in
            written.withLockedValue { $0 += 1 }
        }
        let error = Array(#"{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"denied"}}"#.utf8)
        #expect(streams.deliver(error, to: "/messages/?session_id=abc", owner: "acme/bot1"))
        #expect(!streams.deliver(error, to: "/messages/?session_id=abc", owner: "acme/bot2"), "another agent's stream")
        // The stream's client stopped reading: nothing more is queued onto it.
        writable.withLockedValue { $0 = false }
        #expect(!streams.deliver(error, to: "/messages/?session_id=abc", owner: "acme/bot1"))
        #expect(written.withLockedValue { $0 } == 1)
    }

    @Test("two owners whose upstreams announce the same message endpoint each keep their own stream")
    func ownersDoNotReplaceEachOther() {
        let streams = LegacyStreams()
        let written = NIOLockedValueBox<[String]>([])
        let acme = streams.add("/messages/?session_id=1", owner: "acme/bot1", isWritable: { true }) { _, _ in
            written.withLockedValue { $0.append("acme") }
        }
        _ = streams.add("/messages/?session_id=1", owner: "globex/bot1", isWritable: { true }) { _, _ in
            written.withLockedValue { $0.append("globex") }
        }
        let error = Array(#"{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"denied"}}"#.utf8)
        #expect(streams.deliver(error, to: "/messages/?session_id=1", owner: "acme/bot1"))
        #expect(streams.deliver(error, to: "/messages/?session_id=1", owner: "globex/bot1"))
        // Removing one owner's registration leaves the other's.
        streams.remove("/messages/?session_id=1", owner: "acme/bot1", token: acme)
        #expect(!streams.deliver(error, to: "/messages/?session_id=1", owner: "acme/bot1"))
        #expect(streams.deliver(error, to: "/messages/?session_id=1", owner: "globex/bot1"))
        #expect(written.withLockedValue { $0 } == ["acme", "globex", "globex"])
    }
}
