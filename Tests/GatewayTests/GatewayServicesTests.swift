import Foundation
import Identity
import Policy
import StrictJSON
import TestSupport
import Testing

@testable import Gateway

@Suite("Gateway services")
struct GatewayServicesTests {
    @Test("copies share the parts, and a member set on one copy is not seen by another")
    func valueSemantics() throws {
        let root = DevPKI.repositoryRoot
        let text = String(decoding: FileManager.default.contents(atPath: root + "/mcpgw.dev.json")!, as: UTF8.self)
        let document = try JSONObjectReader(try JSONParser.parse(Array(text.utf8)))
        let identity = try IdentityConfiguration.read(
            identity: try document.object("identity"), tenants: try document.object("tenants")!, baseDirectory: root,
            otherTenantKeys: ["upstream"])
        let original = try GatewayServices(
            authenticator: try identity.makeAuthenticator(), policy: try PolicyEngine(directory: root + "/policies"),
            audit: try AuditLog(sink: .standardOutput), upstreams: [:])
        var changed = original
        #expect(changed.audit === original.audit && changed.requestIDs === original.requestIDs)
        changed.oauth = OAuthResources(publicURL: "https://gw.example", shared: nil, tenants: [:])
        #expect(changed.oauth?.publicURL == "https://gw.example")
        #expect(original.oauth == nil)
        // Everything else is still shared: the copy decides and records through the same parts.
        #expect(changed.audit === original.audit && changed.policy === original.policy)
        #expect(changed.requestIDs === original.requestIDs && changed.metrics === original.metrics)
        var again = changed
        again.oauth = nil
        #expect(changed.oauth != nil && again.oauth == nil)
    }
}
