// mcpgw-bench: micro-benchmarks of the gateway's per-request work, reported as ratios within one run.
//   swift run -c release mcpgw-bench jwt [iterations]
//   swift run -c release mcpgw-bench policy [iterations] [tenants] [rules per tenant]
//   swift run -c release mcpgw-bench worst-case [repetitions] [only cases whose name contains this]
let arguments = CommandLine.arguments.dropFirst()
let iterations = arguments.dropFirst().first.flatMap(Int.init) ?? 2_000
do {
    switch arguments.first {
    case "jwt":
        try JWTBenchmark.run(iterations: iterations)
    case "policy":
        let numbers = arguments.dropFirst(2).compactMap { Int($0) }
        try PolicyBenchmark.run(
            iterations: iterations, tenants: numbers.first ?? 1_000, rulesPerTenant: numbers.dropFirst().first ?? 1_000)
    case "worst-case":
        try WorstCaseBenchmark.run(
            repetitions: arguments.dropFirst().first.flatMap(Int.init) ?? 5, only: arguments.dropFirst(2).first)
    default:
        print("usage: mcpgw-bench jwt [iterations] | policy [iterations] [tenants] [rules per tenant] | worst-case [repetitions]")
    }
} catch {
    print("benchmark failed: \(error)")
}
