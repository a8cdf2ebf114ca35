import Foundation

/// Everything the page shows, as one JSON document: sent whole on every change (the
/// lists are short), so the page never has to merge partial updates.
public struct AppSnapshot: Codable, Sendable {
    public struct Identity: Codable, Sendable {
        public var address: String
        public var serial: String
        public var expires: Date
        /// Listening for files, as this node knows it.
        public var listening: Bool
        /// Whether our presence server says we are registered (nil: not checked yet).
        public var registered: Bool?
        /// Why listening failed, if it did.
        public var problem: String?
    }

    public struct Pin: Codable, Sendable {
        public var domain: String
        public var fingerprint: String
    }

    public struct Contact: Codable, Sendable {
        public var address: String
        public var name: String
        /// Whether they listen for files now (nil: not known yet).
        public var reachable: Bool?
        /// Files from them are taken without asking (`vertex authorize`).
        public var trusted: Bool
    }

    public struct Prompt: Codable, Sendable {
        public struct File: Codable, Sendable {
            public var name: String
            public var size: Int64
        }
        public var id: String
        public var from: String
        public var to: String
        public var files: [File]
        public var totalBytes: Int64
        /// Seconds left before the prompt refuses by itself.
        public var secondsLeft: Int
    }

    public struct Transfer: Codable, Sendable {
        public var id: String
        /// `send` or `receive`.
        public var direction: String
        public var local: String
        public var peer: String
        public var files: [String]
        public var bytes: Int64
        public var totalBytes: Int64
        public var bytesPerSecond: Double
        public var method: String?
        /// `connecting`, `waiting` (for the receiver's answer), `running`, `done`, `failed`.
        public var state: String
        public var verified: Bool
        public var error: String?
        public var started: Date
    }

    public struct Received: Codable, Sendable {
        public var id: Int64
        public var receiver: String
        public var sender: String
        public var path: String
        public var size: Int64
        public var verified: Bool
        public var received: Date
    }

    public struct Connection: Codable, Sendable {
        /// `in` or `out`.
        public var direction: String
        public var local: String
        public var peer: String
        public var method: String
        public var time: Date
    }

    public var identities: [Identity]
    public var pins: [Pin]
    public var contacts: [Contact]
    public var prompts: [Prompt]
    public var transfers: [Transfer]
    public var inbox: [Received]
    public var connections: [Connection]
    public var services: [String]
    public var downloads: String
    public var errors: [String]
}
