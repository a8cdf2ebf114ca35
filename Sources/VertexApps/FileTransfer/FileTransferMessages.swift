import Foundation

/// The control messages of Vertex's file transfer (docs/file-transfer.md). Each travels
/// as a 4-byte big-endian length and that many bytes of JSON; file data follows raw.
public enum FileTransferMessage {
    /// The service name peers listen on.
    public static let service = "file-transfer"
    /// The largest control message either side accepts.
    public static let maximumMessageSize = 1 << 20
    public static let version = 1
    /// The largest file size an offer may name (1 PiB): sizes are added up, and no sum
    /// of 10,000 of them can overflow.
    public static let maximumFileSize: Int64 = 1 << 50

    /// Sender → receiver: what would be sent.
    public struct Offer: Codable, Sendable, Equatable {
        public var version: Int
        public var files: [File]

        public struct File: Codable, Sendable, Equatable {
            /// Where the file goes under the receiver's directory: a relative path with
            /// `/` between components (see ``FileTransferMessage/isSafePath(_:)``).
            public var name: String
            public var size: Int64
            /// SHA-256 of the whole file, lowercase hex.
            public var sha256: String
        }

        /// The sum of the sizes; `Int64.max` when it would overflow (an offer that
        /// ``FileReceiver`` refuses anyway, but whose prompt must not trap first).
        public var totalBytes: Int64 {
            var total: Int64 = 0
            for file in files {
                let (sum, overflow) = total.addingReportingOverflow(max(0, file.size))
                if overflow { return .max }
                total = sum
            }
            return total
        }
    }

    /// Receiver → sender: refused, or accepted with what it already holds of each file.
    public struct Answer: Codable, Sendable, Equatable {
        public var accept: Bool
        public var reason: String?
        /// Per file: bytes already held from an interrupted transfer, and their SHA-256.
        public var held: [Held]

        public struct Held: Codable, Sendable, Equatable {
            public var bytes: Int64
            public var sha256: String
        }
    }

    /// Sender → receiver: where each file's data starts (the held part, when it matched
    /// the sender's own file, else 0). The data of every file follows, in order.
    public struct Start: Codable, Sendable, Equatable {
        public var offsets: [Int64]
    }

    /// Receiver → sender: whether each file arrived whole and matched its SHA-256.
    public struct Result: Codable, Sendable, Equatable {
        public var verified: [Bool]
        public var reason: String?
    }

    /// The suffix of a file being received (never accepted in an offered path).
    static let partialSuffix = ".vertex-partial"

    /// Whether `path` may be written under the target directory: relative, `/`-separated
    /// components that are each a plain name (not empty, `.` or `..`, at most 255 bytes,
    /// no backslash, no control or format characters — bidirectional overrides would let
    /// a name read differently in a prompt — not one of our partial files), 4,096 bytes
    /// at most.
    public static func isSafePath(_ path: String) -> Bool {
        guard !path.isEmpty, path.utf8.count <= 4096 else { return false }
        return path.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { component in
            !component.isEmpty && component != "." && component != ".." && component.utf8.count <= 255
                && !component.contains("\\") && !component.hasSuffix(partialSuffix)
                && !component.unicodeScalars.contains { [.control, .format].contains($0.properties.generalCategory) }
        }
    }
}

/// Something wrong with a transfer, worded for the person at the terminal.
public struct FileTransferError: Error, Sendable, CustomStringConvertible {
    public var description: String
    /// The stream or the peer failed, rather than this side's files or disk.
    var fromPeer: Bool

    public init(_ description: String) {
        self.init(description, fromPeer: false)
    }

    init(_ description: String, fromPeer: Bool) {
        self.description = description
        self.fromPeer = fromPeer
    }
}
