import AMP
import Foundation
import NIOCore
import Q2Q
import Testing

@Suite("Q2Q addresses")
struct Q2QAddressTests {
    @Test("user and domain addresses parse, print and compare")
    func parsing() throws {
        let alice = try Q2QAddress("alice@Example.COM")
        #expect(alice.resource == "alice")
        #expect(alice.domain == "example.com")
        #expect(alice.description == "alice@example.com")
        #expect(!alice.isDomain && !alice.isAnonymous)
        #expect(alice.domainAddress == (try Q2QAddress("example.com")))
        #expect(try Q2QAddress("example.com").isDomain)
        // Resources keep their case; domains do not.
        #expect(try Q2QAddress("Alice@example.com") != alice)
        #expect(try Q2QAddress("alice@EXAMPLE.com") == alice)
        // Ordered by (domain, resource).
        let sorted = try ["bob@b.org", "alice@b.org", "zed@a.net", "a.net"].map(Q2QAddress.init).sorted()
        #expect(sorted.map(\.description) == ["a.net", "zed@a.net", "alice@b.org", "bob@b.org"])
    }

    @Test("bad addresses are refused with a clear reason", arguments: [
        ("", "cannot be empty"),
        ("@example.com", "empty user part"),
        ("alice@", "empty domain part"),
        ("a@b@c", "more than one '@'"),
        ("al ice@example.com", "U+20"),
        ("alice@exa\tmple.com", "U+9"),
        ("alice/home@example.com", "'/'"),
        ("alice@example.com\u{7F}", "U+7F"),
        (String(repeating: "a", count: 256) + "@example.com", "256 bytes"),
    ])
    func refused(text: String, reason: String) {
        #expect {
            _ = try Q2QAddress(text)
        } throws: { error in
            (error as? Q2QAddressError)?.description.contains(reason) == true
        }
    }

    @Test("on the wire: the text, and the empty string for the anonymous address")
    func wire() throws {
        let bob = try Q2QAddress("bob@example.org")
        #expect(String(buffer: try bob.ampEncoded()) == "bob@example.org")
        #expect(try Q2QAddress.decodeAMPArgument(from: ByteBuffer(string: "bob@example.org")) == bob)
        #expect(try Q2QAddress.decodeAMPArgument(from: ByteBuffer()) == .anonymous)
        #expect(String(buffer: try Q2QAddress.anonymous.ampEncoded()) == "")
        #expect(throws: AMPArgumentError.self) { try Q2QAddress.decodeAMPArgument(from: ByteBuffer(string: "a@b@c")) }
        let json = try JSONEncoder().encode([bob])
        #expect(try JSONDecoder().decode([Q2QAddress].self, from: json) == [bob])
    }
}

@Suite("HostPort and AmpTime")
struct HostPortAmpTimeTests {
    @Test("HostPort: IPv4, names and bracketed IPv6")
    func hostPort() throws {
        #expect(HostPort("203.0.113.7:8788") == HostPort(host: "203.0.113.7", port: 8788))
        #expect(HostPort("[2001:db8::1]:443") == HostPort(host: "2001:db8::1", port: 443))
        #expect(HostPort(host: "2001:db8::1", port: 443).description == "[2001:db8::1]:443")
        #expect(HostPort(host: "example.com", port: 0).description == "example.com:0")
        for bad in ["", "host", "host:", ":80", "host:65536", "host:-1", "host:8a", "2001:db8::1:80", "[::1]80", "host:٣"] {
            #expect(HostPort(bad) == nil, "\(bad)")
            #expect(throws: AMPArgumentError.self) { try HostPort.decodeAMPArgument(from: ByteBuffer(string: bad)) }
        }
        #expect(String(buffer: try HostPort(host: "192.0.2.7", port: 40123).ampEncoded()) == "192.0.2.7:40123")
    }

    @Test("AmpTime: whole seconds in UTC, strict text")
    func ampTime() throws {
        let time = try #require(AmpTime("2026-11-25T04:05:06"))
        #expect(time.description == "2026-11-25T04:05:06")
        #expect(time.date.timeIntervalSince1970 == 1_795_579_506)
        #expect(AmpTime(Date(timeIntervalSince1970: 1_795_579_506.9)).description == "2026-11-25T04:05:06")
        for bad in ["2026-11-25 04:05:06", "2026-11-25T04:05:06Z", "2026-02-30T00:00:00", "2026-11-25T24:00:00", "2026-1-25T04:05:06", "x"] {
            #expect(AmpTime(bad) == nil, "\(bad)")
        }
        #expect(try AmpTime.decodeAMPArgument(from: ByteBuffer(string: "1999-12-31T23:59:59")).description == "1999-12-31T23:59:59")
    }
}
