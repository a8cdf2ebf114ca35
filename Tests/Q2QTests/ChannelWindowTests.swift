@testable import Q2Q
import Testing
import VertexTestSupport

@Suite("Virtual-channel windows (credit accounting)")
struct ChannelWindowTests {
    /// A sender and a receiver joined by a queue, driven by a seeded random schedule of
    /// sends, deliveries and reads: the receiver never holds more than its window,
    /// every byte sent is eventually read, and the sender is never stuck with credit
    /// owed to it.
    @Test("random schedules: at most one window in flight, and everything arrives", arguments: [1, 7, 4096, 65_536, 1 << 20])
    func randomSchedules(window: Int) throws {
        var random = SplitMix64(seed: UInt64(window))
        var credit = SendCredit(initial: window)
        var receiver = ReceiveWindow(size: window)
        var inFlight: [Int] = []          // bodies sent, not yet arrived
        var grantsInFlight: [Int] = []    // grants sent, not yet arrived
        var held = 0                      // arrived, not yet read by the application
        var toSend = 50 * window + 12_345
        var read = 0
        let total = toSend
        var steps = 0
        while read < total {
            steps += 1
            #expect(steps < 10_000_000)
            switch random.next() % 4 {
            case 0 where toSend > 0:
                let count = credit.take(upTo: min(toSend, Int(random.next() % UInt64(2 * window)) + 1))
                if count > 0 { inFlight.append(count); toSend -= count }
            case 1 where !inFlight.isEmpty:
                let count = inFlight.removeFirst()
                try receiver.received(count)
                held += count
            case 2 where held > 0:
                let count = Int(random.next() % UInt64(held)) + 1
                held -= count
                read += count
                if let grant = receiver.consumed(count) { grantsInFlight.append(grant) }
            case 3 where !grantsInFlight.isEmpty:
                try credit.grant(grantsInFlight.removeFirst())
            default:
                // Nothing else can happen: deliver whatever is pending so the run ends.
                if let count = inFlight.first {
                    inFlight.removeFirst()
                    try receiver.received(count)
                    held += count
                } else if let grant = grantsInFlight.first {
                    grantsInFlight.removeFirst()
                    try credit.grant(grant)
                }
            }
            let unacknowledged = inFlight.reduce(0, +) + held
            #expect(unacknowledged <= window)
            #expect(credit.available + unacknowledged + grantsInFlight.reduce(0, +) <= window)
            if toSend > 0 && credit.available == 0 && inFlight.isEmpty && grantsInFlight.isEmpty && held == 0 {
                Issue.record("stuck: nothing in flight, nothing held, and no credit (window \(window))")
                return
            }
        }
        #expect(read == total && toSend == 0)
    }

    @Test("a sender beyond its window, or a nonsense grant, is refused")
    func violations() {
        var receiver = ReceiveWindow(size: 100)
        #expect(throws: ChannelWindowError.self) { try receiver.received(101) }
        #expect(throws: Never.self) { try receiver.received(100) }
        #expect(throws: ChannelWindowError.self) { try receiver.received(1) }

        var credit = SendCredit(initial: 10)
        #expect(throws: ChannelWindowError.self) { try credit.spend(11) }
        #expect(throws: Never.self) { try credit.spend(10) }
        #expect(throws: ChannelWindowError.self) { try credit.grant(0) }
        #expect(throws: ChannelWindowError.self) { try credit.grant(-5) }
        #expect(throws: ChannelWindowError.self) { try credit.grant(ChannelWindow.maximumCredit + 1) }
        #expect(throws: ChannelWindowError.self) { try credit.grant(Int.max) }
        #expect(credit.available == 0)
    }

    @Test("grants are batched: one per quarter window consumed")
    func batching() throws {
        var receiver = ReceiveWindow(size: 1000)
        try receiver.received(1000)
        var grants: [Int] = []
        for _ in 0..<100 { if let grant = receiver.consumed(10) { grants.append(grant) } }
        #expect(grants == [250, 250, 250, 250])
        #expect(receiver.outstanding == 1000)
    }

    /// The relay's view of one direction, driven by a seeded schedule of writes, honest
    /// and dishonest credits, and the receiver's connection filling and draining: what
    /// the sender may still send plus what is in transit never exceeds the window, a
    /// credit for bytes never forwarded is refused, and nothing is granted while the
    /// receiver's connection is full.
    @Test("relay windows: never more than the window outstanding, whatever the receiver claims", arguments: [1, 4096, 8 << 20])
    func relayWindows(size: Int) throws {
        var random = SplitMix64(seed: UInt64(size) &+ 99)
        var window = RelayWindow(reserving: RelayTable.maximumWindow)
        #expect(throws: ChannelWindowError.self) { try window.forward(1) }   // nothing before the receiver answers
        window.open(size: size)
        var senderCredit = size       // what the sender believes it may send
        var receiverWritable = true
        for _ in 0..<50_000 {
            switch random.next() % 5 {
            case 0 where senderCredit > 0:
                let count = Int(random.next() % UInt64(senderCredit)) + 1
                try window.forward(count)
                senderCredit -= count
            case 1 where window.unacknowledged > 0:
                let count = Int(random.next() % UInt64(window.unacknowledged)) + 1
                let passed = try window.credit(count, receiverWritable: receiverWritable)
                #expect(passed == (receiverWritable ? count : 0))
                senderCredit += passed
            case 2:
                // A receiver that grants what it was never given.
                let beyond = window.unacknowledged + Int(random.next() % 1000) + 1
                #expect(throws: ChannelWindowError.self) { _ = try window.credit(beyond, receiverWritable: true) }
            case 3:
                receiverWritable.toggle()
                if receiverWritable { senderCredit += window.release() }
            default:
                #expect(throws: ChannelWindowError.self) { try window.forward(window.available + 1) }
            }
            #expect(window.available == senderCredit)
            #expect(window.available + window.unacknowledged + window.withheld == size)
        }
    }
}
