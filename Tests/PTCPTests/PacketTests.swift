import PTCP
import PTCPSimulator
import Testing

@Suite("PTCP wire format")
struct PacketTests {
    @Test("every kind of packet round-trips byte-exactly")
    func roundTrip() throws {
        let packets = [
            PTCPPacket(destinationID: 0, packetNumber: 0, handshake: .init(sourceID: 42, initialMaxData: 1 << 22)),
            PTCPPacket(destinationID: 42, packetNumber: 7, handshake: .init(sourceID: 9, initialMaxData: 5),
                       acknowledgement: .init(maxData: 100, delayMicroseconds: 250, ranges: [0...0])),
            PTCPPacket(flags: .fin, destinationID: 1, packetNumber: 1 << 40, packetNumberSize: 2,
                       acknowledgement: .init(maxData: 1 << 50, delayMicroseconds: .max, ranges: [90...100, 10...20, 0...5]),
                       data: .init(offset: 12345, bytes: Array(repeating: 0xAB, count: 1000))),
            PTCPPacket(flags: [.ping], destinationID: .max, packetNumber: 3),
            PTCPPacket(flags: [.rst], destinationID: 5, packetNumber: 4),
        ]
        for packet in packets {
            let bytes = packet.encoded()
            #expect(bytes.count == packet.encodedSize)
            #expect(bytes.count <= 1232)
            let expected = packet.packetNumber   // the receiver expects about this one
            #expect(try PTCPPacket(decoding: bytes, expectedPacketNumber: expected) == packet)
            #expect(PTCPPacket.destinationID(of: bytes) == packet.destinationID)
            // Every proper prefix is refused, never misread — except that stream data
            // which runs to the end of the datagram ends where the datagram does (UDP
            // keeps datagrams whole, so a shorter one is a shorter packet).
            let dataStart = bytes.count - (packet.data.map { packet.flags.contains(.syn) ? 0 : $0.bytes.count } ?? 0)
            for cut in 0..<bytes.count {
                if cut >= dataStart, var shorter = packet.data {
                    shorter.bytes.removeLast(bytes.count - cut)
                    var expected = packet
                    expected.data = shorter
                    #expect(try PTCPPacket(decoding: bytes[0..<cut], expectedPacketNumber: packet.packetNumber) == expected)
                } else {
                    #expect(throws: PTCPPacketError.self) { try PTCPPacket(decoding: bytes[0..<cut], expectedPacketNumber: packet.packetNumber) }
                }
            }
        }
    }

    @Test("a packet number travels in as few bytes as the unacknowledged span needs (never one), and comes back right even when later packets overtook it (seeded property)")
    func truncatedPacketNumbers() throws {
        var random = SimulationRandom(seed: 62)
        #expect(PTCPPacket.packetNumberSize(for: 0, largestAcknowledged: nil) == 2)
        #expect(PTCPPacket.packetNumberSize(for: 10_000, largestAcknowledged: 9_990) == 2)
        #expect(PTCPPacket.packetNumberSize(for: 30_000, largestAcknowledged: 10_000) == 3)
        #expect(PTCPPacket.packetNumberSize(for: 1 << 40, largestAcknowledged: nil) == 4)
        for _ in 0..<5_000 {
            let largestAcknowledged = UInt64.random(in: 0...(1 << 50), using: &random)
            let unacknowledged = UInt64.random(in: 1...(1 << Int.random(in: 1...30, using: &random)), using: &random)
            let number = largestAcknowledged + unacknowledged
            let size = PTCPPacket.packetNumberSize(for: number, largestAcknowledged: largestAcknowledged)
            // The receiver has seen at least up to the acknowledged one; reordering may have
            // brought it as many later packets as were unacknowledged, or up to 32,766.
            let overtaking = max(unacknowledged, 32_766)
            let received = UInt64.random(in: largestAcknowledged...(number + overtaking), using: &random)
            let packet = PTCPPacket(flags: .ping, destinationID: 7, packetNumber: number, packetNumberSize: size)
            #expect(packet.encoded().count == PTCPPacket.fixedHeaderSize + size)
            let decoded = try PTCPPacket(decoding: packet.encoded(), expectedPacketNumber: received + 1)
            #expect(decoded.packetNumber == number, "\(number) sent in \(size) bytes, \(received) received")
        }
    }

    @Test("a stream offset travels as 32 bits and comes back as the value nearest the receiver's next byte (seeded property)")
    func truncatedOffsets() throws {
        var random = SimulationRandom(seed: 32)
        let edges: [UInt64] = [0, 1, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 32) + 1, 5 << 32, PTCPPacket.maximumValue - (1 << 31)]
        for round in 0..<5_000 {
            let expected = round < edges.count ? edges[round] : UInt64.random(in: 0...(PTCPPacket.maximumValue - (1 << 31)), using: &random)
            // Anything within 2 GiB either side (the receive window is at most 1 GiB).
            let low = expected >= (1 << 31) - 1 ? expected - ((1 << 31) - 1) : 0
            let offset = UInt64.random(in: low...(expected + (1 << 31) - 1), using: &random)
            let packet = PTCPPacket(destinationID: 9, packetNumber: 1, data: .init(offset: offset, bytes: [1, 2]))
            let decoded = try PTCPPacket(decoding: packet.encoded(), expectedOffset: expected)
            #expect(decoded.data?.offset == offset, "offset \(offset) near \(expected)")
        }
    }

    @Test("malformed datagrams give typed errors")
    func malformed() {
        var good = PTCPPacket(destinationID: 1, packetNumber: 1, acknowledgement: .init(maxData: 5, delayMicroseconds: 0, ranges: [0...3])).encoded()
        #expect(throws: PTCPPacketError.truncated) { try PTCPPacket(decoding: [3, 0, 0]) }
        var wrongVersion = good
        wrongVersion[0] = 2
        #expect(throws: PTCPPacketError.unknownVersion(2)) { try PTCPPacket(decoding: wrongVersion) }
        good.append(0)
        #expect(throws: PTCPPacketError.self) { try PTCPPacket(decoding: good) }   // trailing byte
        #expect(throws: PTCPPacketError.tooLarge) { try PTCPPacket(decoding: [UInt8](repeating: 3, count: 70_000)) }
        // Variable-length integers only in their shortest form: packet number 1 in two bytes.
        var longForm = PTCPPacket(flags: .ping, destinationID: 1, packetNumber: 1).encoded()
        longForm.replaceSubrange(10...10, with: [0x40, 0x01])
        #expect(throws: PTCPPacketError.self) { try PTCPPacket(decoding: longForm) }
        // An acknowledged range reaching below packet 0.
        var below = PTCPPacket(destinationID: 1, packetNumber: 1, acknowledgement: .init(maxData: 0, delayMicroseconds: 0, ranges: [0...3])).encoded()
        below[below.count - 1] = 4   // the first range's length: 4 below packet 3
        #expect(throws: PTCPPacketError.self) { try PTCPPacket(decoding: below) }
    }

    @Test("random bytes never crash the decoder (fuzz, seeded)")
    func fuzz() {
        var random = SimulationRandom(seed: 99)
        let seeds = [
            PTCPPacket(destinationID: 3, packetNumber: 9, acknowledgement: .init(maxData: 9, delayMicroseconds: 1, ranges: [4...8, 0...1]),
                       data: .init(offset: 7, bytes: [1, 2, 3])).encoded(),
            PTCPPacket(destinationID: 0, packetNumber: 0, handshake: .init(sourceID: 1, initialMaxData: 1)).encoded(),
        ]
        var decoded = 0
        for _ in 0..<10_000 {
            var bytes: [UInt8]
            if Bool.random(using: &random) {
                bytes = (0..<Int.random(in: 0...200, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
                if !bytes.isEmpty, Bool.random(using: &random) { bytes[0] = PTCPPacket.version }
            } else {
                bytes = seeds.randomElement(using: &random)!
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
                }
            }
            if let packet = try? PTCPPacket(decoding: bytes) {
                decoded += 1
                #expect(packet.encoded() == bytes, "a decoded packet encodes back to the same bytes")
            }
        }
        #expect(decoded > 0)
    }
}
