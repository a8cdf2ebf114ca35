import PTCP

extension FuzzTarget {
    /// One PTCP datagram, decoded near the packet number and offset the input chooses:
    /// a packet re-encodes to a datagram that decodes to the same packet, and the
    /// dispatcher's quick read of the destination id agrees with the decoder.
    static let ptcpPacket = FuzzTarget("ptcp-packet", "PTCP datagrams") { input in
        let expectedPacketNumber = UInt64(input.uint16()) << UInt64(input.byte() % 48)
        let expectedOffset = UInt64(input.uint16()) << UInt64(input.byte() % 48)
        let datagram = input.rest()
        guard let packet = try? PTCPPacket(decoding: datagram, expectedPacketNumber: expectedPacketNumber, expectedOffset: expectedOffset) else { return }
        require(PTCPPacket.destinationID(of: datagram) == packet.destinationID, "the dispatcher reads another destination id than the decoder")
        let encoded = packet.encoded()
        require(encoded.count <= PTCPPacket.maximumDatagramSize, "a packet encodes to \(encoded.count) bytes")
        let again = try? PTCPPacket(decoding: encoded, expectedPacketNumber: expectedPacketNumber, expectedOffset: expectedOffset)
        require(again == packet, "\(packet) does not survive encode → decode")
    }

    /// Two sans-I/O connections on a simulated clock, driven by the input: writes,
    /// deliveries, losses, time passing, reads, and arbitrary datagrams aimed at either
    /// side (with its real connection id, so they reach the state machine). Whatever
    /// comes: nothing traps; what either side holds stays within its receive window;
    /// every datagram sent decodes and fits the configured size; and while nothing was
    /// injected, the server reads exactly a prefix of what the client wrote.
    static let ptcpConnection = FuzzTarget("ptcp-connection", "the PTCP connection state machine fed arbitrary datagrams") { input in
        var harness = PTCPHarness()
        harness.run(&input)
    }
}

/// A client and a server connection and the datagrams between them.
struct PTCPHarness {
    static let clientID: UInt64 = 0x1111
    static let serverID: UInt64 = 0x2222
    var configuration: PTCPConfiguration = {
        var configuration = PTCPConfiguration()
        configuration.receiveWindow = 64 * 1024  // small, so that the input can fill it
        return configuration
    }()
    var now = PTCPInstant.zero
    var client: PTCPConnection
    var server: PTCPConnection?
    var toServer: [[UInt8]] = []
    var toClient: [[UInt8]] = []
    var written: [UInt8] = []
    var read: [UInt8] = []
    var injectedIntoServer = false

    init() {
        client = PTCPConnection(connectingWith: Self.clientID, configuration: configuration, now: now)
    }

    mutating func run(_ input: inout FuzzInput) {
        var steps = 0
        while !input.isEmpty, steps < 2_000 {
            steps += 1
            let op = input.byte()
            switch op % 10 {
            case 0:
                let chunk = input.chunk()
                client.write(chunk)
                written += chunk
            case 1: flush(from: .client, deliver: op & 0x80 == 0)
            case 2: flush(from: .server, deliver: op & 0x80 == 0)
            case 3: inject(input.chunk(), into: .server)
            case 4: inject(input.chunk(), into: .client)
            case 5: advance(by: .milliseconds(Int(input.byte()) * 20))
            case 6: readFromServer(maximum: 1 + Int(input.byte()) * 64)
            case 7: if op & 0xF0 == 0x70 { client.finish() }
            case 8: if op == 0xF8 { client.abort() }
            default:
                // Many round trips at once: the state machines left to talk for a while.
                for _ in 0..<8 {
                    flush(from: .client, deliver: true)
                    flush(from: .server, deliver: true)
                    advance(by: .milliseconds(10))
                }
            }
            checkInvariants()
        }
    }

    enum Side { case client, server }

    /// Everything `side` wants to send now, delivered to the other side or lost.
    mutating func flush(from side: Side, deliver: Bool) {
        var datagrams: [[UInt8]] = []
        for _ in 0..<10_000 {
            let next: [UInt8]?
            switch side {
            case .client: next = client.poll(now: now)
            case .server: next = server?.poll(now: now)
            }
            guard let datagram = next else { break }
            datagrams.append(datagram)
            require(datagrams.count < 10_000, "\(side) keeps sending without time passing")
        }
        for datagram in datagrams {
            let limit = max(configuration.maximumDatagramSize, configuration.probedDatagramSize ?? 0) + 20
            require(datagram.count <= limit, "\(side) sent a datagram of \(datagram.count) bytes")
            require((try? PTCPPacket(decoding: datagram)) != nil, "\(side) sent a datagram that does not decode")
            guard deliver else { continue }
            switch side {
            case .client: deliverToServer(datagram)
            case .server: client.receive(datagram, now: now)
            }
        }
    }

    mutating func deliverToServer(_ datagram: [UInt8]) {
        if server == nil {
            server = try? PTCPConnection(accepting: datagram, localID: Self.serverID, configuration: configuration, now: now)
        } else {
            server!.receive(datagram, now: now)
        }
    }

    /// Arbitrary bytes as a datagram to `side`; when long enough to hold a header, with
    /// PTCP's version and `side`'s connection id, so that they reach the connection.
    mutating func inject(_ bytes: [UInt8], into side: Side) {
        var datagram = bytes
        if datagram.count > PTCPPacket.fixedHeaderSize {
            datagram[0] = PTCPPacket.version
            let id = side == .client ? Self.clientID : Self.serverID
            for index in 0..<8 { datagram[2 + index] = UInt8(truncatingIfNeeded: id >> UInt64(8 * (7 - index))) }
        }
        switch side {
        case .client: client.receive(datagram, now: now)
        case .server:
            injectedIntoServer = true
            deliverToServer(datagram)
        }
    }

    mutating func advance(by duration: Duration) {
        now = PTCPInstant(nanoseconds: now.nanoseconds + Int64(duration.components.seconds) * 1_000_000_000
            + Int64(duration.components.attoseconds / 1_000_000_000))
        if let deadline = client.nextDeadline, deadline <= now { client.handleTimeout(now: now) }
        if let deadline = server?.nextDeadline, deadline <= now { server!.handleTimeout(now: now) }
    }

    mutating func readFromServer(maximum: Int) {
        guard server != nil, let bytes = server!.read(maximum: maximum) else { return }
        require(bytes.count <= maximum, "read \(bytes.count) bytes, asked for \(maximum)")
        read += bytes
    }

    func checkInvariants() {
        for (name, connection) in [("client", client), ("server", server)] {
            guard let connection else { continue }
            let held = connection.readableBytes + connection.outOfOrderBytes
            require(held <= configuration.receiveWindow, "the \(name) holds \(held) bytes past its \(configuration.receiveWindow)-byte window")
        }
        if !injectedIntoServer {
            require(read.count <= written.count && read[...] == written.prefix(read.count),
                    "the server read bytes the client never wrote (\(read.count) read, \(written.count) written)")
        }
    }
}
