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
            PTCPPacket(flags: .fin, destinationID: 1, packetNumber: 1 << 40,
                       acknowledgement: .init(maxData: 1 << 50, delayMicroseconds: .max, ranges: [90...100, 10...20, 0...5]),
                       data: .init(offset: 12345, bytes: Array(repeating: 0xAB, count: 1000))),
            PTCPPacket(flags: [.ping], destinationID: .max, packetNumber: 3),
            PTCPPacket(flags: [.rst], destinationID: 5, packetNumber: 4),
        ]
        for packet in packets {
            let bytes = packet.encoded()
            #expect(bytes.count == packet.encodedSize)
            #expect(bytes.count <= 1232)
            #expect(try PTCPPacket(decoding: bytes) == packet)
            #expect(PTCPPacket.destinationID(of: bytes) == packet.destinationID)
            // Every proper prefix is refused, never misread.
            for cut in 0..<bytes.count {
                #expect(throws: PTCPPacketError.self) { try PTCPPacket(decoding: bytes[0..<cut]) }
            }
        }
    }

    @Test("malformed datagrams give typed errors")
    func malformed() {
        var good = PTCPPacket(destinationID: 1, packetNumber: 1, data: .init(offset: 0, bytes: [1, 2, 3])).encoded()
        #expect(throws: PTCPPacketError.truncated) { try PTCPPacket(decoding: [2, 0, 0]) }
        var wrongVersion = good
        wrongVersion[0] = 1
        #expect(throws: PTCPPacketError.unknownVersion(1)) { try PTCPPacket(decoding: wrongVersion) }
        var unknownFlags = good
        unknownFlags[1] |= 0x80
        #expect(throws: PTCPPacketError.unknownFlags(unknownFlags[1])) { try PTCPPacket(decoding: unknownFlags) }
        good.append(0)
        #expect(throws: PTCPPacketError.self) { try PTCPPacket(decoding: good) }   // trailing byte
        let backwards = PTCPPacket(destinationID: 1, packetNumber: 1,
                                   acknowledgement: .init(maxData: 0, delayMicroseconds: 0, ranges: [0...5, 3...9])).encoded()
        #expect(throws: PTCPPacketError.self) { try PTCPPacket(decoding: backwards) }
        #expect(throws: PTCPPacketError.tooLarge) { try PTCPPacket(decoding: [UInt8](repeating: 2, count: 70_000)) }
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
                if !bytes.isEmpty, Bool.random(using: &random) { bytes[0] = 2 }
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
