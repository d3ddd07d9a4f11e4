import Foundation

/// Every tenant's policy set at one moment; immutable, swapped whole on reload.
public struct PolicySnapshot: Sendable {
    /// Tenant id → its policy set (global documents included).
    public let tenants: [String: TenantPolicySet]
    /// The documents that apply to every tenant.
    public let globalDocuments: [PolicyDocument]
    /// Where it was loaded from: a policy directory, or one document file (`singleFileTenants`).
    public let directory: String
    /// When the snapshot is one document file applied to every tenant: those tenants (reloads read the file again
    /// for them); nil for a policy directory.
    public let singleFileTenants: [String]?

    /// The name of the folder whose documents apply to every tenant.
    public static let globalFolder = "_global"

    /// A snapshot from tenant documents and global documents.
    public init(
        tenantDocuments: [String: [PolicyDocument]], globalDocuments: [PolicyDocument], directory: String,
        singleFileTenants: [String]? = nil
    ) {
        self.globalDocuments = globalDocuments
        self.directory = directory
        self.singleFileTenants = singleFileTenants
        self.tenants = Dictionary(
            uniqueKeysWithValues: tenantDocuments.map { tenant, documents in
                (tenant, TenantPolicySet(tenant: tenant, documents: globalDocuments + documents))
            })
    }

    /// The policy's answer for `request`. A tenant without a policy directory is denied (fail closed).
    public func evaluate(_ request: PolicyRequest) -> PolicyDecision {
        guard let set = tenants[request.tenant] else {
            return PolicyDecision(
                outcome: .deny, rule: "no_policy", document: request.tenant,
                reason: "tenant '\(request.tenant)' has no policy directory", matches: [], logArguments: false)
        }
        return set.evaluate(request)
    }

    /// Loads one policy document file that applies to every tenant of `tenants` (the single-file mode).
    public static func load(file: String, tenants: [String]) throws(PolicyLoadError) -> PolicySnapshot {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw PolicyLoadError(file: file, reason: "cannot read")
        }
        let name = URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
        let document = try PolicyDocument.parse(Array(data), file: file, defaultName: name)
        return PolicySnapshot(
            tenantDocuments: Dictionary(uniqueKeysWithValues: tenants.map { ($0, [document]) }), globalDocuments: [], directory: file,
            singleFileTenants: tenants)
    }

    /// Loads what `previous` was loaded from again: its directory, or its single file for the same tenants.
    public static func reload(_ previous: PolicySnapshot) throws(PolicyLoadError) -> PolicySnapshot {
        if let tenants = previous.singleFileTenants { return try load(file: previous.directory, tenants: tenants) }
        return try load(directory: previous.directory)
    }

    /// Loads `directory/<tenant>/*.json` for every tenant folder and `directory/_global/*.json`. Every file is
    /// parsed and validated; the first problem is thrown with its file, rule and field.
    public static func load(directory: String) throws(PolicyLoadError) -> PolicySnapshot {
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        guard manager.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw PolicyLoadError(file: directory, reason: "not a directory")
        }
        let entries: [String]
        do {
            entries = try manager.contentsOfDirectory(atPath: directory).sorted()
        } catch {
            throw PolicyLoadError(file: directory, reason: "cannot list: \(error.localizedDescription)")
        }
        var tenants: [String: [PolicyDocument]] = [:]
        var global: [PolicyDocument] = []
        for entry in entries where !entry.hasPrefix(".") {
            let path = directory + "/" + entry
            guard manager.fileExists(atPath: path, isDirectory: &isDirectory) else {
                // Listed but not there: a symbolic link to nothing (found by review: its tenant was dropped silently).
                throw PolicyLoadError(file: path, reason: "cannot be read (a symbolic link to nothing?)")
            }
            guard isDirectory.boolValue else {
                throw PolicyLoadError(
                    file: path, reason: "policy files live in tenant folders (policies/<tenant>/*.json) or \(globalFolder)/")
            }
            guard entry == globalFolder || isValidTenant(entry) else {
                throw PolicyLoadError(file: path, reason: "folder name is not a valid tenant id")
            }
            let documents = try loadFolder(path)
            if entry == globalFolder { global = documents } else { tenants[entry] = documents }
        }
        guard !tenants.isEmpty else { throw PolicyLoadError(file: directory, reason: "no tenant folders (policies/<tenant>/*.json)") }
        for (tenant, documents) in tenants.sorted(by: { $0.key < $1.key }) {
            try checkRateLimitIDs(of: tenant, global + documents)
        }
        return PolicySnapshot(tenantDocuments: tenants, globalDocuments: global, directory: directory)
    }

    /// A rate limit's id names its buckets (with the tenant, agent and tool): two limits of one tenant with one id
    /// would count in the same buckets, each refilling them at its own rate. So an id is unique among all documents
    /// that apply to a tenant, global ones included.
    private static func checkRateLimitIDs(of tenant: String, _ documents: [PolicyDocument]) throws(PolicyLoadError) {
        var seen: [String: String] = [:]
        for document in documents {
            for limit in document.rateLimits {
                if let other = seen[limit.id] {
                    throw PolicyLoadError(
                        file: document.file, rule: limit.id,
                        reason:
                            "rate limit id '\(limit.id)' is also used by \(other), which applies to tenant \(tenant) too (ids name the limits' buckets)"
                    )
                }
                seen[limit.id] = document.file
            }
        }
    }

    private static func loadFolder(_ path: String) throws(PolicyLoadError) -> [PolicyDocument] {
        let files: [String]
        do {
            // Hidden files are skipped, as hidden folders are one level up (an editor's `.x.json.swp`, a
            // `.disabled.json` moved aside): found by review, a hidden document was in force.
            files = try FileManager.default.contentsOfDirectory(atPath: path).filter { !$0.hasPrefix(".") }.sorted()
        } catch {
            throw PolicyLoadError(file: path, reason: "cannot list: \(error.localizedDescription)")
        }
        // Anything else is refused, not skipped (found by review: a deny rule in `acme/extra/deny.json` or
        // `acme/Deny.JSON` loaded nothing, and `policy check` said ok).
        for file in files {
            let full = path + "/" + file
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory) else {
                throw PolicyLoadError(file: full, reason: "cannot be read (a symbolic link to nothing?)")
            }
            if isDirectory.boolValue {
                throw PolicyLoadError(
                    file: full,
                    reason:
                        "folders inside a tenant folder are not read: its documents are <tenant>/*.json (move them up, or hide the folder with a leading '.')"
                )
            }
            guard file.hasSuffix(".json") else {
                throw PolicyLoadError(
                    file: full,
                    reason:
                        "not a policy document: a tenant folder holds *.json files only (lower-case; hide other files with a leading '.')")
            }
        }
        guard !files.isEmpty else { throw PolicyLoadError(file: path, reason: "no *.json policy documents") }
        var documents: [PolicyDocument] = []
        var names: [String: String] = [:]
        for file in files {
            let full = path + "/" + file
            guard let data = FileManager.default.contents(atPath: full) else {
                throw PolicyLoadError(file: full, reason: "cannot read")
            }
            let document = try PolicyDocument.parse(Array(data), file: full, defaultName: String(file.dropLast(5)))
            if let other = names[document.name] {
                throw PolicyLoadError(file: full, reason: "document name '\(document.name)' is also used by \(other)")
            }
            names[document.name] = full
            documents.append(document)
        }
        return documents
    }

    private static func isValidTenant(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 128
            && name.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || ".-_:@".unicodeScalars.contains($0)
            }
    }
}
