import Foundation
import PTCP
import PTCPSimulator

// ptcp-bench core [--bytes N] [--rtt MS] [--rate MBIT] [--loss PCT] [--seed N] [--cc bbr|newreno]
// Runs the sans-I/O core over a simulated link and prints goodput and counters.
let arguments = Array(CommandLine.arguments.dropFirst())
func option(_ name: String, _ fallback: Double) -> Double {
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count, let value = Double(arguments[index + 1]) else { return fallback }
    return value
}
let bytes = Int(option("--bytes", 50_000_000))
let rtt = option("--rtt", 50)
let rate = option("--rate", 100)
let loss = option("--loss", 0) / 100
var configuration = PTCPConfiguration()
if let index = arguments.firstIndex(of: "--cc"), index + 1 < arguments.count, let kind = PTCPCongestionControl(rawValue: arguments[index + 1]) {
    configuration.congestionControl = kind
}
let link = SimulatedLink(delay: .microseconds(Int64(rtt * 500)), megabitsPerSecond: rate, loss: loss)
var simulation = PTCPSimulation(forward: link, configuration: configuration)
let clock = ContinuousClock()
let start = clock.now
let outcome = simulation.run(bytes: bytes, seed: UInt64(option("--seed", 1)))
let elapsed = clock.now - start
func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}
let wall = seconds(elapsed)
let simulated = seconds(outcome.transferTime)
let coreSpeed = Double(outcome.bytesDelivered) * 8 / wall / 1e6
print("simulated link: rtt \(rtt) ms, \(rate) Mbit/s, loss \(loss * 100) %, \(configuration.congestionControl)")
print("delivered \(outcome.bytesDelivered) of \(bytes) bytes, corrupt \(outcome.corruptBytes), closed \(outcome.bothClosed)")
print(String(format: "goodput %.1f Mbit/s (simulated %.2f s); core speed %.0f Mbit/s of CPU (%.2f s wall)",
             outcome.megabitsPerSecond, simulated, coreSpeed, wall))
print("client: \(outcome.client)")
print("server: \(outcome.server)")
print("wakeups: \(outcome.wakeups), errors: \(outcome.clientErrors) \(outcome.serverErrors)")
