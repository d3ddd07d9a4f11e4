extension IdentityConfiguration {
    /// These settings as a reload applies them, with what only a restart applies held at `running`'s values: the
    /// tenants (one added waits for the restart; one removed is dropped now, which only refuses more), and of each
    /// tenant the audiences of its protected resources (from `identity.public_url`, `mcp_path` and `oauth`), its keys
    /// fetched over HTTPS and its introspection, and the published OAuth resources. What a reload re-reads (CAs, CRLs,
    /// static keys, issuers, certificate rules) comes from these settings.
    ///
    /// Found by review: the authenticator was built from the whole new file, so an edit of `public_url` that the
    /// reload reported as waiting for a restart made every OAuth token (whose audience is the resource still
    /// published) fail; and refusing the identity reload instead held back a revocation until the restart.
    public func holdingRestartOnlySettings(of running: IdentityConfiguration) -> IdentityConfiguration {
        var held = self
        held.oauth = running.oauth
        held.tenants = [:]
        for (tenant, var identity) in tenants {
            guard let before = running.tenants[tenant] else { continue }
            if identity.jwt != nil {
                identity.jwt!.resourceAudiences = [running.oauth?.tenants[tenant]?.resource, running.oauth?.shared?.resource]
                    .compactMap { $0 }
                identity.jwt!.remoteKeys = before.jwt?.remoteKeys
            }
            identity.introspection = before.introspection
            held.tenants[tenant] = identity
        }
        return held
    }
}
