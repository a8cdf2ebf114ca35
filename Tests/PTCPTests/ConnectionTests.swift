import PTCP
import PTCPSimulator
import Testing

/// Two connections wired back to back with no delay, driven by hand.
struct Pair {
    var now = PTCPInstant(nanoseconds: 1_000_000_000)
    var client: PTCPConnection
    var server: PTCPConnection?
    var clientEvents: [PTCPConnection.Event] = []
    var serverEvents: [PTCPConnection.Event] = []
    var received: [UInt8] = []

    init(configuration: PTCPConfiguration = .init()) {
        client = PTCPConnection(connectingWith: 0xC1, configuration: configuration, now: now)
        exchange()
    }

    /// Passes datagrams both ways until neither side has anything to say.
    mutating func exchange() {
        var moved = true
        while moved {
            moved = false
            while let datagram = client.poll(now: now) {
                moved = true
                if var server {
                    server.receive(datagram, now: now)
                    self.server = server
                } else {
                    server = try? PTCPConnection(accepting: datagram, localID: 0x5E, configuration: client.configuration, now: now)
                }
            }
            while let event = client.nextEvent() { clientEvents.append(event) }
            guard var server else { continue }
            while let bytes = server.read(maximum: 1 << 20) { received += bytes }
            while let datagram = server.poll(now: now) {
                moved = true
                client.receive(datagram, now: now)
            }
            while let event = server.nextEvent() { serverEvents.append(event) }
            self.server = server
        }
    }

    mutating func advance(by duration: Duration) {
        now = now + duration
        client.handleTimeout(now: now)
        server?.handleTimeout(now: now)
        exchange()
    }
}

@Suite("PTCP connections, driven by hand")
struct ConnectionTests {
    @Test("handshake, data, half-close each way, clean close")
    func lifecycle() throws {
        var pair = Pair()
        #expect(pair.client.isEstablished && pair.server?.isEstablished == true)
        #expect(pair.clientEvents == [.connected])
        pair.client.write(Array("hello".utf8))
        pair.client.finish()
        pair.exchange()
        #expect(pair.received == Array("hello".utf8))
        #expect(pair.serverEvents.contains(.peerFinished))
        // The server can still answer after the client's half-close.
        pair.server!.write(Array("bye".utf8))
        pair.server!.finish()
        pair.exchange()
        #expect(pair.client.read(maximum: 100) == Array("bye".utf8))
        pair.exchange()
        #expect(pair.clientEvents.contains(.peerFinished))
        #expect(pair.clientEvents.last == .closed(nil) && pair.serverEvents.last == .closed(nil))
        pair.advance(by: .seconds(11))
        #expect(pair.client.isClosed && pair.server!.isClosed)
    }

    @Test("malformed, misaddressed and forged datagrams are dropped and counted; the stream goes on")
    func hostileDatagrams() throws {
        var pair = Pair()
        pair.client.write(Array(repeating: 1, count: 10_000))
        pair.exchange()
        var server = try #require(pair.server)
        let before = server.statistics.droppedPackets
        server.receive([UInt8](), now: pair.now)                                   // empty
        server.receive([2, 0, 0, 0], now: pair.now)                                // short
        server.receive([2] + PTCPPacket(destinationID: 0x5E, packetNumber: 500).encoded().dropFirst(), now: pair.now) // version 2's
        server.receive(PTCPPacket(flags: .ping, destinationID: 0x77, packetNumber: 501).encoded(), now: pair.now)  // unknown id
        server.receive(PTCPPacket(destinationID: 0x5E, packetNumber: 502,                                          // forged ack
                                  acknowledgement: .init(maxData: 1 << 40, delayMicroseconds: 0, ranges: [0...1_000_000])).encoded(), now: pair.now)
        server.receive(PTCPPacket(destinationID: 0x5E, packetNumber: 503,                                          // beyond our window
                                  data: .init(offset: 1 << 30, bytes: [9])).encoded(), now: pair.now)
        server.receive(PTCPPacket(flags: .rst, destinationID: 0x99, packetNumber: 504).encoded(), now: pair.now)   // reset, wrong id
        #expect(server.statistics.droppedPackets - before == 7)
        #expect(server.statistics.forgedAcknowledgements == 1)
        #expect(server.isEstablished)
        pair.server = server
        pair.client.write(Array(repeating: 2, count: 10_000))
        pair.exchange()
        #expect(pair.received == Array(repeating: 1, count: 10_000) + Array(repeating: 2, count: 10_000))
    }

    @Test("a peer that vanishes: keepalive pings, then an idle timeout error")
    func idleTimeout() {
        let pair = Pair()
        var client = pair.client
        var now = pair.now
        var pings = 0
        var deadlines = 0
        while !client.isClosed, deadlines < 100 {
            guard let deadline = client.nextDeadline else { break }
            now = deadline
            deadlines += 1
            client.handleTimeout(now: now)
            while client.poll(now: now) != nil { pings += 1 }   // lost: nobody answers
        }
        #expect(client.isClosed)
        var events: [PTCPConnection.Event] = []
        while let event = client.nextEvent() { events.append(event) }
        #expect(events.last == .closed(.timedOut))
        #expect(now - pair.now <= .seconds(31))
        #expect(pings >= 2 && deadlines < 40, "\(pings) pings, \(deadlines) wakeups: no timer storm")
    }

    @Test("an idle connection whose peer answers stays up on keepalives alone")
    func keepalive() {
        var pair = Pair()
        for _ in 0..<12 { pair.advance(by: .seconds(10)) }
        #expect(pair.client.isEstablished && pair.server?.isEstablished == true)
        #expect(pair.client.statistics.packetsSent < 40)
    }

    @Test("abort sends a reset; the peer's connection ends with an error")
    func reset() {
        var pair = Pair()
        pair.client.abort()
        pair.exchange()
        #expect(pair.client.isClosed && pair.server!.isClosed)
        #expect(pair.serverEvents.last == .closed(.reset))
    }

    @Test("a handshake nobody answers fails after the handshake timeout")
    func handshakeTimeout() {
        var client = PTCPConnection(connectingWith: 7, now: .zero)
        var syns = 0
        var now = PTCPInstant.zero
        while !client.isClosed {
            while client.poll(now: now) != nil { syns += 1 }
            guard let deadline = client.nextDeadline else { break }
            now = deadline
            client.handleTimeout(now: now)
        }
        #expect(client.nextEvent() == .closed(.handshakeTimedOut))
        #expect(now == PTCPInstant.zero + .seconds(10))
        #expect(syns >= 3 && syns <= 6, "\(syns) SYNs with backoff")
    }
}

@Suite("PTCP early data")
struct EarlyDataTests {
    @Test("a client's first bytes ride in its padded SYN and are readable before the handshake ends")
    func earlyDataInTheSYN() throws {
        let now = PTCPInstant(nanoseconds: 1_000_000_000)
        var client = PTCPConnection(connectingWith: 0xC1, now: now)
        let hello = (0..<700).map { UInt8(truncatingIfNeeded: $0) }
        client.write(hello)
        let first = client.poll(now: now)
        let syn = try #require(first)
        #expect(syn.count == client.configuration.maximumDatagramSize, "padded to a full datagram")
        let packet = try PTCPPacket(decoding: syn)
        #expect(packet.flags.contains(.syn) && packet.data?.offset == 0 && packet.data?.bytes == hello)
        var server = try PTCPConnection(accepting: syn, localID: 0x5E, now: now)
        #expect(!server.isEstablished)
        #expect(server.nextEvent() == .readable)
        #expect(server.read(maximum: 10_000) == hello)

        // The server answers before the client's next packet, within 3× what it received.
        server.write([UInt8](repeating: 9, count: 20_000))
        var answered = 0
        var datagrams: [[UInt8]] = []
        while let datagram = server.poll(now: now) {
            answered += datagram.count
            datagrams.append(datagram)
        }
        #expect(answered <= 3 * syn.count)
        #expect(answered > 2 * syn.count, "a TLS server flight fits")
        // Held back by the limit, the acceptor waits for the client, not for a timer that
        // has already passed (which fired over and over: a busy loop until the handshake
        // timed out, when a caller abandoned its SYN).
        let deadline = try #require(server.nextDeadline)
        #expect(deadline > now, "the next deadline \(deadline) is not after \(now)")
        server.handleTimeout(now: now + .milliseconds(1))
        #expect(server.poll(now: now + .milliseconds(1)) == nil)
        #expect(try #require(server.nextDeadline) > now + .milliseconds(1))
        #expect(try PTCPPacket(decoding: datagrams[0]).flags.contains(.syn), "the SYN-ACK goes first")

        for datagram in datagrams { client.receive(datagram, now: now) }
        #expect(client.isEstablished)
        var read: [UInt8] = []
        while let bytes = client.read(maximum: 100_000) { read += bytes }
        #expect(read.allSatisfy { $0 == 9 } && !read.isEmpty)
        // Once the client speaks, the limit is gone and the rest follows.
        var later = now
        var total = read.count
        for _ in 0..<200 where total < 20_000 {
            later = later + .milliseconds(5)
            client.handleTimeout(now: later)
            server.handleTimeout(now: later)
            while let datagram = client.poll(now: later) { server.receive(datagram, now: later) }
            while let datagram = server.poll(now: later) { client.receive(datagram, now: later) }
            while let bytes = client.read(maximum: 100_000) { total += bytes.count }
        }
        #expect(server.isEstablished)
        #expect(total == 20_000)
    }

    @Test("a first flight larger than a datagram goes in further SYNs (up to three); the acceptor reads it all before the handshake ends")
    func earlyDataInSeveralSYNs() throws {
        let now = PTCPInstant(nanoseconds: 1_000_000_000)
        var client = PTCPConnection(connectingWith: 0xC1, now: now)
        let flight = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        client.write(flight)
        client.write([UInt8](repeating: 1, count: 5000))   // beyond the early-data limit: waits for the handshake
        var syns: [[UInt8]] = []
        while let datagram = client.poll(now: now) { syns.append(datagram) }
        #expect(syns.count == 3)
        let packets = try syns.map { try PTCPPacket(decoding: $0) }
        #expect(packets.allSatisfy { $0.handshake?.sourceID == 0xC1 && $0.destinationID == 0 && $0.padding >= 0 })
        #expect(syns.allSatisfy { $0.count == client.configuration.maximumDatagramSize })
        var server = try PTCPConnection(accepting: syns[0], localID: 0x5E, now: now)
        for syn in syns.dropFirst() { server.receive(syn, now: now) }
        var read: [UInt8] = []
        while let bytes = server.read(maximum: 100_000) { read += bytes }
        #expect(!server.isEstablished)
        #expect(Array(read.prefix(3000)) == flight)
        #expect(read.count == Int(PTCPConnection.earlyDataLimit(client.configuration)))
    }

    @Test("a lost SYN is resent with the same early data; the acceptor reads it once")
    func lostSYN() throws {
        var configuration = PTCPConfiguration()
        configuration.initialRetransmissionTimeout = .milliseconds(250)
        var now = PTCPInstant(nanoseconds: 1_000_000_000)
        var client = PTCPConnection(connectingWith: 0xC1, configuration: configuration, now: now)
        client.write(Array("first flight".utf8))
        #expect(client.poll(now: now) != nil)   // lost
        now = now + .milliseconds(260)
        client.handleTimeout(now: now)
        let resent = client.poll(now: now)
        let again = try #require(resent)
        #expect(try PTCPPacket(decoding: again).data?.bytes == Array("first flight".utf8))
        var server = try PTCPConnection(accepting: again, localID: 0x5E, configuration: configuration, now: now)
        server.receive(again, now: now)   // a duplicate copy
        var read: [UInt8] = []
        while let bytes = server.read(maximum: 100) { read += bytes }
        #expect(read == Array("first flight".utf8))
    }

    @Test("padding is zeros, and only in a SYN or a PING (a path MTU probe)")
    func padding() throws {
        var syn = PTCPPacket(destinationID: 0, packetNumber: 0, handshake: .init(sourceID: 1, initialMaxData: 100), padding: 50).encoded()
        #expect(try PTCPPacket(decoding: syn).padding == 50)
        syn[syn.count - 1] = 1
        #expect(throws: PTCPPacketError.self) { try PTCPPacket(decoding: syn) }
        // Any other packet's stream data runs to the end of the datagram: what follows is data, not padding.
        var data = PTCPPacket(destinationID: 1, packetNumber: 1, data: .init(offset: 0, bytes: [1])).encoded()
        data += [0, 0]
        #expect(try PTCPPacket(decoding: data).data?.bytes == [1, 0, 0])
        var synData = PTCPPacket(destinationID: 0, packetNumber: 0, handshake: .init(sourceID: 1, initialMaxData: 100),
                                 data: .init(offset: 0, bytes: [1]), padding: 20).encoded()
        #expect(try PTCPPacket(decoding: synData).data?.bytes == [1], "a SYN's data says its length")
        synData[synData.count - 1] = 1
        #expect(throws: PTCPPacketError.self) { try PTCPPacket(decoding: synData) }
        #expect(PTCPPacket(destinationID: 1, packetNumber: 1, padding: 9).padding == 0, "no padding without a handshake or a ping")
        var probe = PTCPPacket(flags: .ping, destinationID: 1, packetNumber: 2, padding: 1400).encoded()
        #expect(probe.count == PTCPPacket.fixedHeaderSize + 4 + 1400)   // a four-byte packet number
        #expect(try PTCPPacket(decoding: probe).padding == 1400)
        probe[probe.count - 1] = 7
        #expect(throws: PTCPPacketError.self) { try PTCPPacket(decoding: probe) }
    }
}
