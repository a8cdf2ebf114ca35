import PTCP

/// Two PTCP connections joined by simulated links, driven by a simulated clock: the
/// client sends `bytes` of a known pattern and finishes; the server reads (at most
/// `readRate` bytes per second when set), checks every byte, and finishes too. Used by
/// the tests and by `ptcp-bench core`.
public struct PTCPSimulation: Sendable {
    public struct Outcome: Sendable {
        /// Bytes the server read, all checked against the pattern.
        public var bytesDelivered: Int
        public var corruptBytes: Int
        /// Simulated time from the first SYN to the last byte read.
        public var transferTime: Duration
        public var bothClosed: Bool
        public var clientErrors: [PTCPConnectionError]
        public var serverErrors: [PTCPConnectionError]
        public var client: PTCPConnection.Statistics
        public var server: PTCPConnection.Statistics
        /// Times a connection was woken by its timer (a timer storm shows here).
        public var wakeups: Int
        /// The most stream bytes the server held unread (flow control bounds it).
        public var maximumHeldByServer = 0
        /// The datagram size the sending side ended with (path MTU probing raises it).
        public var clientDatagramSize = 0
        public var megabitsPerSecond: Double {
            transferTime > .zero ? Double(bytesDelivered) * 8 / transferTime.seconds / 1e6 : 0
        }
    }

    public var forward: SimulatedLink
    public var backward: SimulatedLink
    public var configuration: PTCPConfiguration
    public var readRate: Double?
    /// Give up after this much simulated time.
    public var timeLimit: Duration = .seconds(600)

    public init(forward: SimulatedLink, backward: SimulatedLink? = nil, configuration: PTCPConfiguration = .init()) {
        self.forward = forward
        self.backward = backward ?? forward
        self.configuration = configuration
    }

    /// The pattern byte at `offset` (what the client sends and the server checks).
    @inline(__always)
    public static func patternByte(at offset: UInt64) -> UInt8 {
        UInt8(truncatingIfNeeded: (offset &* 0x9E37_79B1) >> 16)
    }

    public mutating func run(bytes: Int, seed: UInt64) -> Outcome {
        var random = SimulationRandom(seed: seed)
        var queue = EventQueue()
        var now = PTCPInstant.zero
        var client = PTCPConnection(connectingWith: random.next() | 1, configuration: configuration, now: now)
        var server: PTCPConnection?
        var outcome = Outcome(bytesDelivered: 0, corruptBytes: 0, transferTime: .zero, bothClosed: false, clientErrors: [],
                              serverErrors: [], client: .init(), server: .init(), wakeups: 0)
        var written = 0
        var clientClosed = false
        var serverClosed = false
        var serverFinished = false
        var readBudget = 0.0
        var readScheduled = false
        var lastReadAt = PTCPInstant.zero
        var wake: [PTCPInstant?] = [.zero, nil]
        let serverID = random.next() | 1
        let chunk = 64 * 1024

        func fill(_ connection: inout PTCPConnection) {
            while written < bytes, connection.unsentBytes < 1024 * 1024 {
                let count = min(chunk, bytes - written)
                let base = UInt64(written)
                connection.write((0..<count).map { Self.patternByte(at: base + UInt64($0)) })
                written += count
            }
            if written == bytes { connection.finish() }
        }

        queue.push(now, .wake(0))
        while let (time, event) = queue.pop() {
            guard time - .zero <= timeLimit else { break }
            now = time
            var side: Int
            switch event {
            case .deliver(let to, let datagram):
                side = to
                if to == 0 {
                    client.receive(datagram, now: now)
                } else if var connection = server {
                    connection.receive(datagram, now: now)
                    server = connection
                } else if let accepted = try? PTCPConnection(accepting: datagram, localID: serverID, configuration: configuration, now: now) {
                    server = accepted
                }
            case .wake(let who):
                guard wake[who] == time else { continue }
                wake[who] = nil
                side = who
                outcome.wakeups += 1
                if who == 0 { client.handleTimeout(now: now) } else { server?.handleTimeout(now: now) }
            case .read:
                readScheduled = false
                side = 1
            }
            // Let the side that moved act: application first, then the wire.
            if side == 0 {
                if client.isEstablished { fill(&client) }
                while let event = client.nextEvent() {
                    if case .closed(let error) = event {
                        clientClosed = true
                        if let error { outcome.clientErrors.append(error) }
                    }
                }
                while let datagram = client.poll(now: now) {
                    for arrival in forward.arrivals(of: datagram.count, now: now, random: &random) {
                        queue.push(arrival, .deliver(1, datagram))
                    }
                }
            } else if var connection = server {
                if let readRate {
                    readBudget = min(readBudget + (now - lastReadAt).seconds * readRate, 256 * 1024)
                    lastReadAt = now
                }
                outcome.maximumHeldByServer = max(outcome.maximumHeldByServer, connection.readableBytes + connection.outOfOrderBytes)
                while connection.readableBytes > 0 {
                    let allowed = readRate == nil ? Int.max : Int(readBudget)
                    guard allowed > 0, let bytes = connection.read(maximum: min(allowed, 256 * 1024)) else {
                        if !readScheduled {
                            readScheduled = true
                            queue.push(now + .milliseconds(1), .read)
                        }
                        break
                    }
                    if readRate != nil { readBudget -= Double(bytes.count) }
                    let base = UInt64(outcome.bytesDelivered)
                    for (index, byte) in bytes.enumerated() where byte != Self.patternByte(at: base + UInt64(index)) {
                        outcome.corruptBytes += 1
                    }
                    outcome.bytesDelivered += bytes.count
                    outcome.transferTime = now - .zero
                }
                while let event = connection.nextEvent() {
                    switch event {
                    case .peerFinished:
                        serverFinished = true
                        connection.finish()
                    case .closed(let error):
                        serverClosed = true
                        if let error { outcome.serverErrors.append(error) }
                    default: break
                    }
                }
                while let datagram = connection.poll(now: now) {
                    for arrival in backward.arrivals(of: datagram.count, now: now, random: &random) {
                        queue.push(arrival, .deliver(0, datagram))
                    }
                }
                server = connection
            }
            // Re-arm both timers (a delivery to one side may change nothing of the other's).
            for who in 0..<2 {
                let deadline = who == 0 ? client.nextDeadline : server?.nextDeadline
                if let deadline, wake[who] != deadline {
                    let at = max(deadline, now)
                    wake[who] = at
                    queue.push(at, .wake(who))
                }
            }
            if clientClosed && serverClosed && client.isClosed && (server?.isClosed ?? true) { break }
        }
        _ = serverFinished
        outcome.bothClosed = clientClosed && serverClosed
        outcome.client = client.statistics
        outcome.clientDatagramSize = client.datagramSize
        outcome.server = server?.statistics ?? .init()
        return outcome
    }
}

enum SimulationEvent {
    case deliver(Int, [UInt8])
    case wake(Int)
    case read
}

/// A binary min-heap of events by time, first-in first-out among equal times.
struct EventQueue {
    private var heap: [(time: PTCPInstant, order: Int, event: SimulationEvent)] = []
    private var counter = 0

    mutating func push(_ time: PTCPInstant, _ event: SimulationEvent) {
        counter += 1
        heap.append((time, counter, event))
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard less(child, parent) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> (PTCPInstant, SimulationEvent)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < heap.count, less(left, smallest) { smallest = left }
            if right < heap.count, less(right, smallest) { smallest = right }
            guard smallest != parent else { break }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
        return (top.time, top.event)
    }

    private func less(_ a: Int, _ b: Int) -> Bool {
        heap[a].time != heap[b].time ? heap[a].time < heap[b].time : heap[a].order < heap[b].order
    }
}

/// SplitMix64: seeded, so a failing run replays from its seed.
public struct SimulationRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
