// mcpgw-bench: micro-benchmarks of the gateway's per-request work, reported as ratios within one run.
//   swift run -c release mcpgw-bench jwt [iterations]
let arguments = CommandLine.arguments.dropFirst()
let iterations = arguments.dropFirst().first.flatMap(Int.init) ?? 2_000
do {
    switch arguments.first {
    case "jwt":
        try JWTBenchmark.run(iterations: iterations)
    default:
        print("usage: mcpgw-bench jwt [iterations]")
    }
} catch {
    print("benchmark failed: \(error)")
}
