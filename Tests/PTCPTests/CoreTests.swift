import PTCP
import PTCPSimulator
import Testing
import VertexTestSupport

/// Runs a simulation on a thread of its own: it is seconds of pure CPU, which on the
/// cooperative pool (two threads here) would stall every async test running beside it.
func simulate(_ simulation: PTCPSimulation, bytes: Int, seed: UInt64) async -> PTCPSimulation.Outcome {
    await onOwnThread {
        var simulation = simulation
        return simulation.run(bytes: bytes, seed: seed)
    }
}

// One simulation at a time: each takes a thread of its own, and thirty of them at once
// would crowd out the cooperative pool just the same.
@Suite("PTCP core on a simulated link", .serialized)
struct CoreTests {
    @Test("100 MB byte-exact through 5 % loss, reordering and duplicates; both ends close cleanly")
    func hundredMegabytesThroughLoss() async {
        let link = SimulatedLink(delay: .milliseconds(5), megabitsPerSecond: 400, loss: 0.05, duplicate: 0.02, reorder: 0.02)
        let simulation = PTCPSimulation(forward: link)
        let outcome = await simulate(simulation, bytes: 100_000_000, seed: 7)
        #expect(outcome.bytesDelivered == 100_000_000)
        #expect(outcome.corruptBytes == 0)
        #expect(outcome.bothClosed)
        #expect(outcome.clientErrors.isEmpty && outcome.serverErrors.isEmpty)
        #expect(outcome.client.lostPackets > 1000, "the link did lose packets: \(outcome.client)")
        #expect(outcome.server.duplicatePackets > 0)
    }

    @Test("a 200 ms path that sends 1 % of packets ahead of its queue (as netlab's --reorder does): byte-exact, the losses it fakes are found out, and the window does not collapse")
    func packetsSentAheadOfTheQueue() async {
        // Before: packet numbers sent in one byte came back misplaced once 170 later
        // packets had overtaken them (acknowledgements of packets never sent, the
        // connection timed out); three overtaking packets made a loss; and a round trip
        // both of whose halves skipped the queue gave BBR a 1 ms minimum RTT: 1.1 Mbit/s.
        let link = SimulatedLink(delay: .milliseconds(100), megabitsPerSecond: 20, loss: 0.001, reorder: 0.01)
        let outcome = await simulate(PTCPSimulation(forward: link), bytes: 10_000_000, seed: 8)
        #expect(outcome.bytesDelivered == 10_000_000 && outcome.corruptBytes == 0 && outcome.bothClosed)
        #expect(outcome.clientErrors.isEmpty && outcome.serverErrors.isEmpty)
        #expect(outcome.client.forgedAcknowledgements == 0 && outcome.server.forgedAcknowledgements == 0)
        #expect(outcome.client.spuriousLosses > 0, "the path did reorder: \(outcome.client)")
        #expect(outcome.client.spuriousLosses * 2 < outcome.client.lostPackets, "most losses declared are real (the queue overflowing in startup, the link's 0.1 %): \(outcome.client)")
        #expect(outcome.megabitsPerSecond > 10, "\(outcome.megabitsPerSecond) Mbit/s")
    }

    @Test("1 % loss at 50 ms RTT and 100 Mbit/s: the BBR controller keeps the pipe mostly full")
    func lossyLinkStaysFull() async {
        let simulation = PTCPSimulation(forward: SimulatedLink(delay: .milliseconds(25), megabitsPerSecond: 100, loss: 0.01))
        let outcome = await simulate(simulation, bytes: 30_000_000, seed: 2)
        #expect(outcome.bytesDelivered == 30_000_000 && outcome.corruptBytes == 0 && outcome.bothClosed)
        #expect(outcome.megabitsPerSecond > 70, "\(outcome.megabitsPerSecond) Mbit/s")
    }

    @Test("NewReno halves on loss (and so crawls at 1 % loss), but delivers byte-exact")
    func newReno() async {
        var configuration = PTCPConfiguration()
        configuration.congestionControl = .newReno
        let clean = PTCPSimulation(forward: SimulatedLink(delay: .milliseconds(10), megabitsPerSecond: 50), configuration: configuration)
        let fast = await simulate(clean, bytes: 10_000_000, seed: 3)
        #expect(fast.bytesDelivered == 10_000_000 && fast.corruptBytes == 0 && fast.bothClosed)
        #expect(fast.megabitsPerSecond > 30, "\(fast.megabitsPerSecond) Mbit/s")
        let lossy = PTCPSimulation(forward: SimulatedLink(delay: .milliseconds(10), megabitsPerSecond: 50, loss: 0.01), configuration: configuration)
        let slow = await simulate(lossy, bytes: 3_000_000, seed: 3)
        #expect(slow.bytesDelivered == 3_000_000 && slow.corruptBytes == 0 && slow.bothClosed)
        #expect(slow.megabitsPerSecond < fast.megabitsPerSecond)
    }

    @Test("path MTU probing: a path that carries 1,452-byte datagrams gets them; one that does not keeps 1,232, with no timeout and no congestion response")
    func pathMTUProbing() async {
        let wide = PTCPSimulation(forward: SimulatedLink(delay: .milliseconds(10), megabitsPerSecond: 20))
        let raised = await simulate(wide, bytes: 8_000_000, seed: 4)
        #expect(raised.bytesDelivered == 8_000_000 && raised.corruptBytes == 0 && raised.bothClosed)
        #expect(raised.clientDatagramSize == 1452)
        #expect(raised.client.pathMTUProbes == 1)
        let narrow = PTCPSimulation(forward: SimulatedLink(delay: .milliseconds(10), megabitsPerSecond: 20, largestDatagram: 1300))
        let kept = await simulate(narrow, bytes: 8_000_000, seed: 4)
        #expect(kept.bytesDelivered == 8_000_000 && kept.corruptBytes == 0 && kept.bothClosed)
        #expect(kept.clientDatagramSize == 1232)
        #expect(kept.client.pathMTUProbes == 3, "three tries, a second apart, then it settles")
        #expect(kept.client.retransmissionTimeouts == 0)
        #expect(kept.megabitsPerSecond > 0.8 * raised.megabitsPerSecond, "no congestion response to a lost probe")
    }

    @Test("a path that stops carrying the probed size mid-transfer (no ICMP): a timeout, back to 1,232 bytes, byte-exact")
    func pathMTUBlackHole() async {
        var link = SimulatedLink(delay: .milliseconds(10), megabitsPerSecond: 20)
        link.largestDatagramChange = (at: .seconds(1), to: 1300)
        let outcome = await simulate(PTCPSimulation(forward: link), bytes: 8_000_000, seed: 5)
        #expect(outcome.bytesDelivered == 8_000_000 && outcome.corruptBytes == 0 && outcome.bothClosed)
        #expect(outcome.clientErrors.isEmpty && outcome.serverErrors.isEmpty)
        #expect(outcome.client.pathMTUProbes == 1)
        #expect(outcome.client.retransmissionTimeouts >= 1)
        #expect(outcome.clientDatagramSize == 1232)
    }

    @Test("handshake and close complete under 30 % loss each way", arguments: 1...12)
    func handshakeAndCloseUnderLoss(seed: UInt64) async {
        let simulation = PTCPSimulation(forward: SimulatedLink(delay: .milliseconds(20), megabitsPerSecond: 10, loss: 0.3))
        let outcome = await simulate(simulation, bytes: 5_000, seed: seed)
        #expect(outcome.bytesDelivered == 5_000 && outcome.corruptBytes == 0)
        #expect(outcome.bothClosed, "seed \(seed): \(outcome.clientErrors) \(outcome.serverErrors)")
        #expect(outcome.clientErrors.isEmpty && outcome.serverErrors.isEmpty, "seed \(seed): \(outcome.clientErrors) \(outcome.serverErrors)")
    }

    @Test("random links (delay, rate, loss, duplication, reordering, jitter, queue): always byte-exact", arguments: 1...20)
    func randomLinks(seed: UInt64) async {
        var random = SimulationRandom(seed: seed &* 7919)
        func link() -> SimulatedLink {
            SimulatedLink(delay: .milliseconds(Int64.random(in: 1...150, using: &random)),
                          megabitsPerSecond: Double.random(in: 1...200, using: &random),
                          queueBytes: Int.random(in: 8_000...2_000_000, using: &random),
                          loss: Double.random(in: 0...0.15, using: &random),
                          duplicate: Double.random(in: 0...0.05, using: &random),
                          reorder: Double.random(in: 0...0.05, using: &random),
                          jitter: .milliseconds(Int64.random(in: 0...10, using: &random)))
        }
        let forward = link(), backward = link()
        let simulation = PTCPSimulation(forward: forward, backward: backward)
        let size = Int.random(in: 0...2_000_000, using: &random)
        let outcome = await simulate(simulation, bytes: size, seed: seed)
        #expect(outcome.bytesDelivered == size && outcome.corruptBytes == 0, "seed \(seed): \(forward) \(backward)")
        #expect(outcome.bothClosed, "seed \(seed): \(outcome.clientErrors) \(outcome.serverErrors) \(forward)")
        // No timer storm: wakeups stay within a small multiple of the packets exchanged.
        let packets = outcome.client.packetsSent + outcome.server.packetsSent
        #expect(outcome.wakeups <= 2 * packets + 200, "seed \(seed): \(outcome.wakeups) wakeups for \(packets) packets")
    }

    @Test("a fast link: pacing sends in bursts of about a millisecond, not a timer per datagram")
    func pacingInBursts() async {
        let link = SimulatedLink(delay: .milliseconds(2), megabitsPerSecond: 1000)
        let outcome = await simulate(PTCPSimulation(forward: link), bytes: 50_000_000, seed: 6)
        #expect(outcome.bytesDelivered == 50_000_000 && outcome.corruptBytes == 0 && outcome.bothClosed)
        #expect(outcome.megabitsPerSecond > 800, "\(outcome.megabitsPerSecond) Mbit/s")
        // A millisecond at 1 Gbit/s is about 85 datagrams (64 KB at most: 45): one
        // wakeup per burst, where pacing datagram by datagram took about one per datagram.
        #expect(outcome.wakeups * 10 < outcome.client.packetsSent, "\(outcome.wakeups) wakeups for \(outcome.client.packetsSent) packets")
    }

    @Test("a reader slower than the link holds the sender to the receive window")
    func flowControl() async {
        var configuration = PTCPConfiguration()
        configuration.receiveWindow = 256 * 1024
        var simulation = PTCPSimulation(forward: SimulatedLink(delay: .milliseconds(10), megabitsPerSecond: 100), configuration: configuration)
        simulation.readRate = 1_000_000
        let outcome = await simulate(simulation, bytes: 3_000_000, seed: 5)
        #expect(outcome.bytesDelivered == 3_000_000 && outcome.corruptBytes == 0 && outcome.bothClosed)
        #expect(outcome.maximumHeldByServer <= 256 * 1024, "\(outcome.maximumHeldByServer)")
        #expect(outcome.megabitsPerSecond < 10)   // the reader, not the link, set the pace
    }
}
