import CoreMetrics
import Identity
import NIOCore
public import Policy
public import Prometheus
import Synchronization
import TLS

/// The gateway's Prometheus metrics, through swift-metrics with swift-prometheus as the backend (a registry of its
/// own, not the process-wide `MetricsSystem`, so that tests and embedders run several gateways side by side).
///
/// Requests and decisions are counted from the audit records as they are written — the one place every decision
/// passes exactly once — so metrics and audit log cannot disagree. Label values come from bounded sets only: tenants
/// and rule ids from the loaded configuration and policies, methods from the MCP method table, decisions and reasons
/// from the gateway's own vocabulary. Anything else a request could put there (an unknown method, a tool name) is
/// counted as `other`, never as itself. Names and labels are listed in docs/metrics.md.
public final class GatewayMetrics: Sendable {
    /// Where the metrics are kept and rendered from.
    public let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    /// What label values may be: tenants and each tenant's rule ids, replaced when policies are reloaded.
    private let vocabulary: Mutex<Vocabulary>
    /// Values of process-wide counters at the last scrape (they are exported as increments of Prometheus counters).
    private let lastSeen = Mutex<[String: Int]>([:])

    struct Vocabulary {
        var tenants: Set<String>
        var rules: [String: Set<String>]
        /// The counters each kind of record increments, found once per kind: counting a request then costs one lookup
        /// instead of label checks and a lookup per series. Emptied when the vocabulary is replaced. Only kinds with a
        /// known method and tenant are kept (a record's method is the client's text, of any length), and at most
        /// `rememberedRecordKinds` of them.
        var series: [RecordKind: [CoreMetrics.Counter]] = [:]
        /// Counts replacements, so that counters found under an older vocabulary are not remembered under a newer one.
        var generation = 0
    }

    /// What decides which series a record counts in.
    struct RecordKind: Hashable {
        let tenant: String?
        let method: String?
        let decision: AuditRecord.Decision
        let rule: String?
        let sharedLimits: String?
    }

    /// At most this many kinds of record have their counters remembered; others are looked up each time.
    static let rememberedRecordKinds = 4096

    /// Methods that may appear as a label: the MCP method table, and the gateway's own names for GET/DELETE.
    static let methods: Set<String> =
        MCPMethod.governed.union(MCPMethod.plumbing).union(MCPMethod.removedInModern).union([
            "stream", "session_end", "response", "tasks/list",
        ])

    /// Metrics for `policy`'s tenants and rules.
    public init(policy: PolicySnapshot) {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30),
        ]
        self.factory = factory
        vocabulary = Mutex(Self.vocabulary(policy))
        // Declared at once, so that a scrape shows them (at zero) before the first event.
        for result in ["success", "failure"] { counter("mcpgw_reloads_total", "result", result).increment(by: 0) }
        counter("mcpgw_audit_write_errors_total").increment(by: 0)
    }

    static func vocabulary(_ policy: PolicySnapshot) -> Vocabulary {
        Vocabulary(tenants: Set(policy.tenants.keys), rules: policy.tenants.mapValues(\.ruleIDs))
    }

    /// Takes the tenants and rule ids of reloaded policies.
    public func policiesReloaded(_ policy: PolicySnapshot) {
        var next = Self.vocabulary(policy)
        vocabulary.withLock { state in
            next.generation = state.generation + 1
            state = next
        }
    }

    // MARK: - Events

    /// Counts what `records` say: requests by tenant, method and decision; policy decisions by rule; rate-limited
    /// calls; authentication failures by reason; refusals of connections and requests by the gateway's limits.
    func observe(_ records: [AuditRecord]) {
        // Read in place: a `for` loop over the array would copy each record.
        records.withUnsafeBufferPointer { records in
            for index in records.indices { observe(records[index]) }
        }
    }

    private func observe(_ record: borrowing AuditRecord) {
        let kind = RecordKind(
            tenant: record.tenant, method: record.method, decision: record.decision, rule: record.rule,
            sharedLimits: record.sharedLimits)
        let (known, vocabulary) = self.vocabulary.withLock { state -> ([CoreMetrics.Counter]?, Vocabulary?) in
            // The vocabulary is copied only when the kind is new.
            if let known = state.series[kind] { return (known, nil) }
            return (nil, state)
        }
        if let known {
            for counter in known { counter.increment() }
            return
        }
        guard let vocabulary else { return }
        let found = series(of: record, vocabulary)
        for counter in found { counter.increment() }
        guard record.method.map(Self.methods.contains) ?? true, record.tenant.map(vocabulary.tenants.contains) ?? true
        else { return }
        self.vocabulary.withLock { state in
            // Remembered only under the vocabulary its labels were checked against (a reload may have come since).
            if state.generation == vocabulary.generation, state.series.count < Self.rememberedRecordKinds {
                state.series[kind] = found
            }
        }
    }

    /// How many kinds of record have their counters remembered.
    var rememberedKinds: Int { vocabulary.withLock { $0.series.count } }

    /// The counters of the series `record` counts in, with its labels checked against `vocabulary`.
    private func series(of record: AuditRecord, _ vocabulary: Vocabulary) -> [CoreMetrics.Counter] {
        let tenant = tenantLabel(record.tenant, vocabulary)
        let method = record.method.map { Self.methods.contains($0) ? $0 : "other" } ?? "none"
        let decision = record.decision.rawValue
        var counters = [counter("mcpgw_requests_total", "tenant", tenant, "method", method, "decision", decision)]
        let rule = ruleLabel(record.rule, tenant: record.tenant, vocabulary)
        switch record.decision {
        case .allow, .audit, .deny:
            counters.append(counter("mcpgw_policy_decisions_total", "tenant", tenant, "decision", decision, "rule", rule))
        case .rateLimited:
            counters.append(counter("mcpgw_policy_decisions_total", "tenant", tenant, "decision", decision, "rule", rule))
            counters.append(counter("mcpgw_rate_limited_total", "tenant", tenant, "rule", rule))
        case .authenticationFailed:
            counters.append(counter("mcpgw_authentication_failures_total", "reason", rule))
        case .malformed, .unavailable:
            counters.append(counter("mcpgw_refusals_total", "tenant", tenant, "reason", rule))
        }
        if let mode = record.sharedLimits {
            counters.append(counter("mcpgw_shared_limits_degraded_decisions_total", "tenant", tenant, "mode", mode))
        }
        return counters
    }

    /// One forwarded exchange's upstream answer: its latency (to the response head) and status.
    func observeUpstream(tenant: String?, seconds: Double, status: Int) {
        let label = vocabulary.withLock { tenantLabel(tenant, $0) }
        let failed = status == 502 || status == 504
        if failed {
            counter("mcpgw_upstream_errors_total", "tenant", label, "status", String(status)).increment()
        } else {
            timer(label).recordNanoseconds(Int64(seconds * 1e9))
        }
    }

    /// A connection refused at accept (`listener_full`, `source_full`).
    func connectionRefused(reason: String) { counter("mcpgw_connections_refused_total", "reason", reason).increment() }

    /// A reload (SIGHUP or `POST /reload`) ended.
    public func reloaded(success: Bool) { counter("mcpgw_reloads_total", "result", success ? "success" : "failure").increment() }

    // MARK: - Scrape

    /// The Prometheus text exposition, with the gauges and process-wide counters brought up to date first.
    func render(services: GatewayServices) -> [UInt8] {
        let audit = services.audit
        gauge("mcpgw_audit_queue_bytes").record(Int64(audit.queuedBytes))
        gauge("mcpgw_audit_accepting").record(audit.isAccepting ? 1 : 0)
        gauge("mcpgw_held_response_bytes").record(Int64(services.upstream.heldBytes.total))
        gauge("mcpgw_receiving_body_bytes").record(Int64(services.receivingBodies.total))
        catchUp("mcpgw_audit_write_errors_total", to: audit.writeErrors)
        catchUp("mcpgw_audit_records_total", to: audit.writtenRecords)
        let vocabulary = self.vocabulary.withLock { $0 }
        let streams = services.upstream.budgets.streamsByTenant()
        let unreachable = services.upstream.unreachableUpstreams()
        let withUpstreams = services.upstream.tenants
        for tenant in vocabulary.tenants.sorted() {
            gauge("mcpgw_streams_in_flight", "tenant", tenant).record(Int64(streams[tenant] ?? 0))
            if withUpstreams.contains(tenant) {
                gauge("mcpgw_upstream_reachable", "tenant", tenant).record(unreachable[tenant] == nil ? 1 : 0)
            }
        }
        for (key, count) in TLSHandshakeCounters.shared.snapshot() {
            catchUp(
                "mcpgw_tls_handshakes_total", "result", key.result, "version", key.version, "reason", key.reason, to: count)
        }
        if let shared = services.sharedLimits {
            gauge("mcpgw_shared_limits_store_up").record(shared.isStoreReachable ? 1 : 0)
            catchUp("mcpgw_shared_limits_store_requests_total", "result", "answered", to: shared.requestsAnswered.load(ordering: .relaxed))
            catchUp("mcpgw_shared_limits_store_requests_total", "result", "failed", to: shared.requestsFailed.load(ordering: .relaxed))
        }
        catchUp("mcpgw_upstream_read_pauses_total", to: services.upstream.statistics.readPauses.load(ordering: .relaxed))
        let cache = TokenCacheStatistics.current
        catchUp("mcpgw_token_cache_requests_total", "result", "hit", to: cache.hits)
        catchUp("mcpgw_token_cache_requests_total", "result", "miss", to: cache.misses)
        return registry.emitToBuffer()
    }

    // MARK: - Helpers

    /// A series: the metric's name and up to three label values (the label names are the metric's own).
    private struct SeriesKey: Hashable {
        let name: String
        let values: (String, String, String)

        static func == (left: SeriesKey, right: SeriesKey) -> Bool { left.name == right.name && left.values == right.values }

        func hash(into hasher: inout Hasher) {
            hasher.combine(name)
            hasher.combine(values.0)
            hasher.combine(values.1)
            hasher.combine(values.2)
        }
    }

    private let timers = Mutex<[String: CoreMetrics.Timer]>([:])

    /// The upstream latency histogram of `tenant` (made once).
    private func timer(_ tenant: String) -> CoreMetrics.Timer {
        if let existing = timers.withLock({ $0[tenant] }) { return existing }
        let made = CoreMetrics.Timer(label: "mcpgw_upstream_response_seconds", dimensions: [("tenant", tenant)], factory: factory)
        timers.withLock { $0[tenant] = made }
        return made
    }

    /// Counters already made, so that counting one event costs a lookup rather than a registry query and an object.
    private let counters = Mutex<[SeriesKey: CoreMetrics.Counter]>([:])

    private func counter(
        _ name: String, _ k0: String = "", _ v0: String = "", _ k1: String = "", _ v1: String = "", _ k2: String = "",
        _ v2: String = ""
    ) -> CoreMetrics.Counter {
        let key = SeriesKey(name: name, values: (v0, v1, v2))
        if let existing = counters.withLock({ $0[key] }) { return existing }
        let dimensions = [(k0, v0), (k1, v1), (k2, v2)].filter { !$0.0.isEmpty }
        let made = CoreMetrics.Counter(label: name, dimensions: dimensions, factory: factory)
        counters.withLock { $0[key] = made }
        return made
    }

    private func gauge(_ name: String, _ k0: String = "", _ v0: String = "") -> CoreMetrics.Gauge {
        CoreMetrics.Gauge(label: name, dimensions: k0.isEmpty ? [] : [(k0, v0)], factory: factory)
    }

    /// Brings a counter to a process-wide total kept elsewhere (it only ever goes up).
    private func catchUp(
        _ name: String, _ k0: String = "", _ v0: String = "", _ k1: String = "", _ v1: String = "", _ k2: String = "",
        _ v2: String = "", to total: Int
    ) {
        let key = [name, v0, v1, v2].joined(separator: "|")
        let previous = lastSeen.withLock { seen in
            defer { seen[key] = max(seen[key] ?? 0, total) }
            return seen[key] ?? 0
        }
        counter(name, k0, v0, k1, v1, k2, v2).increment(by: Int64(max(0, total - previous)))
    }

    private func tenantLabel(_ tenant: String?, _ vocabulary: Vocabulary) -> String {
        guard let tenant else { return "none" }
        return vocabulary.tenants.contains(tenant) ? tenant : "other"
    }

    /// A rule id of the tenant's loaded policies, or one of the gateway's own reasons (lower-case words, as the
    /// gateway writes them); anything else is `other`.
    private func ruleLabel(_ rule: String?, tenant: String?, _ vocabulary: Vocabulary) -> String {
        guard let rule else { return "none" }
        if let tenant, vocabulary.rules[tenant]?.contains(rule) == true { return rule }
        return Self.gatewayReasons.contains(rule) || rule.hasPrefix("jsonrpc_") && rule.count <= 14 ? rule : "other"
    }

    /// The gateway's own rule names in audit records (not policy rule ids).
    static let gatewayReasons: Set<String> = [
        "default", "protocol", "header_mismatch", "task_binding", "session_binding", "event_binding", "path", "http_method",
        "oauth_metadata", "tenant_path", "abandoned", "offload", "introspection_unavailable", "resource_uri", "accept",
        "agent_stream_budget", "tenant_stream_budget", "tenant_request_budget", "upstream_connection_budget", "receiving_body_bytes",
        "large_decision_budget", "slow_request_head", "slow_request_body", "sse_event_unreadable", "http_parse",
        "body_too_large", "audit_unavailable", "upstream", "shutdown",
        "no_credentials", "token_too_large", "malformed_token", "algorithm_none", "unsupported_algorithm",
        "algorithm_mismatch", "unknown_kid", "key_not_selectable", "bad_signature", "token_expired", "token_not_yet_valid",
        "token_issued_in_future", "missing_claim", "invalid_claim", "wrong_issuer", "wrong_audience", "unknown_tenant",
        "wrong_token_type", "tenant_mismatch", "agent_mismatch", "certificate_refused", "token_inactive",
        // Found by review: written to the audit log, and counted as `other`.
        "no_policy", "batch", "batch_size", "agent_request_budget", "costly_decision_budget", "pipeline_depth", "slow_reader", "audit_room",
        "held_response_bytes", "large_list_budget", "response_framing", "shared_limits", "credentials_refused",
        "credentials_expired", "completion_ref", "http_upgrade",
    ]

    /// `now` (by default the clock's current time) in seconds on the monotonic clock the metrics' times use.
    static func monotonicSeconds(_ now: NIODeadline = .now()) -> Double { Double(now.uptimeNanoseconds) / 1e9 }
}
