import NIOCore
import TLS
import Testing

@Suite("TLS state machine (no channels)")
struct TLSStateMachineTests {
    func active() -> TLSStateMachine {
        var machine = TLSStateMachine()
        _ = machine.channelActive()
        _ = machine.handshakeCompleted()
        return machine
    }

    @Test("idle → handshaking → active; writes are held during the handshake and coalesced after it")
    func handshake() {
        var machine = TLSStateMachine()
        #expect(machine.write() == .holdWrite)
        #expect(machine.flush() == .flushAfterHandshake)
        #expect(machine.channelActive() == .startHandshake)
        #expect(machine.channelActive() == .none)
        #expect(machine.bytesReceived() == .continueHandshake)
        #expect(machine.handshakeCompleted() == .completeHandshake)
        #expect(machine.state == .active)
        #expect(machine.write() == .bufferWrite)
        #expect(machine.flush() == .encryptAndFlush)
        #expect(machine.bytesReceived() == .readApplicationData)
    }

    @Test("close(mode: .output) leaves the output closed, not active; reading goes on; the peer's close_notify ends it")
    func closeOutput() {
        var machine = active()
        #expect(machine.closeRequested(.output) == .sendCloseNotify(mode: .output))
        #expect(machine.state == .outputClosed)
        #expect(machine.write() == .failWrite)
        #expect(machine.bytesReceived() == .readApplicationData)
        #expect(machine.closeNotifyReceived(halfClosureAllowed: true) == .sendCloseNotify(mode: .all))
        #expect(machine.state == .closing)
    }

    @Test("the peer's close_notify: input closed fires once with half-closure; without it the connection closes")
    func closeNotify() {
        var halfClosed = active()
        #expect(halfClosed.closeNotifyReceived(halfClosureAllowed: true) == .fireInputClosed)
        #expect(halfClosed.closeNotifyReceived(halfClosureAllowed: true) == .none)
        #expect(halfClosed.bytesReceived() == .ignoreInput)
        #expect(halfClosed.write() == .bufferWrite)
        #expect(halfClosed.closeRequested(.output) == .sendCloseNotify(mode: .all))

        var whole = active()
        #expect(whole.closeNotifyReceived(halfClosureAllowed: false) == .sendCloseNotify(mode: .all))
        #expect(whole.state == .closing)
    }

    @Test("closing during the handshake aborts it; a failure closes once; inactivity reports a handshake cut short")
    func failures() {
        var handshaking = TLSStateMachine()
        _ = handshaking.channelActive()
        #expect(handshaking.closeRequested(.all) == .abortHandshake)

        var failing = TLSStateMachine()
        _ = failing.channelActive()
        #expect(failing.failed() == .fail)
        #expect(failing.failed() == .none)
        #expect(failing.write() == .failWrite)

        var cut = TLSStateMachine()
        _ = cut.channelActive()
        #expect(cut.channelInactive() == .inactive(duringHandshake: true))
        var done = active()
        #expect(done.channelInactive() == .inactive(duringHandshake: false))
        #expect(done.state == .closed)
    }
}
