import PTCP
import PTCPSimulator
import Testing

@Suite("PTCP core on a simulated link")
struct CoreTests {
    @Test("a clean link: byte-exact, both ends close, the pipe fills")
    func cleanLink() {
        var simulation = PTCPSimulation(forward: SimulatedLink(delay: .milliseconds(25), megabitsPerSecond: 100))
        let outcome = simulation.run(bytes: 20_000_000, seed: 1)
        #expect(outcome.bytesDelivered == 20_000_000)
        #expect(outcome.corruptBytes == 0)
        #expect(outcome.bothClosed)
        #expect(outcome.clientErrors.isEmpty && outcome.serverErrors.isEmpty)
        #expect(outcome.megabitsPerSecond > 70, "\(outcome.megabitsPerSecond) Mbit/s")
        print("clean: \(outcome.megabitsPerSecond) Mbit/s, \(outcome.client)")
    }

    @Test("1 % loss at 50 ms RTT keeps the pipe mostly full (BBR)")
    func lossyLink() {
        var simulation = PTCPSimulation(forward: SimulatedLink(delay: .milliseconds(25), megabitsPerSecond: 100, loss: 0.01))
        let outcome = simulation.run(bytes: 30_000_000, seed: 2)
        #expect(outcome.bytesDelivered == 30_000_000)
        #expect(outcome.corruptBytes == 0)
        #expect(outcome.bothClosed)
        #expect(outcome.megabitsPerSecond > 60, "\(outcome.megabitsPerSecond) Mbit/s")
        print("lossy: \(outcome.megabitsPerSecond) Mbit/s, \(outcome.client)")
    }
}
