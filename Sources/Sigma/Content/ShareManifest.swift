import Crypto
import Foundation

/// What a share holds: its files, each with its relative path, size and BEP 52 root.
///
/// A share of one file is named by that file's root. A share of a directory is named by
/// the SHA-256 of this manifest's canonical encoding, which peers fetch from any holder
/// and check against that name before trusting a single path in it.
public struct ShareManifest: Sendable, Hashable {
    public struct File: Sendable, Hashable {
        /// Relative path inside the share, components separated by `/`.
        public var path: String
        public var size: Int64
        /// The file's BEP 52 root; nil for an empty file (BEP 52 gives those none).
        public var root: MerkleTree.Hash?

        public init(path: String, size: Int64, root: MerkleTree.Hash?) {
            self.path = path
            self.size = size
            self.root = root
        }
    }

    public enum Kind: String, Sendable, Hashable {
        /// One file, named by its root.
        case file
        /// A directory, named by the manifest's hash; paths start with its name.
        case directory = "dir"
    }

    public var kind: Kind
    /// The share's name: the file's or the directory's.
    public var name: String
    /// Files in canonical order (by path, bytewise).
    public private(set) var files: [File]

    /// Limits on what a manifest from the network may say.
    public static let maximumFiles = 100_000
    public static let maximumEncodedSize = 16 << 20
    public static let maximumComponentLength = 255
    public static let maximumFileSize: Int64 = 1 << 50

    /// A manifest, checked (see ``ShareError``) and put in canonical order.
    public init(kind: Kind, name: String, files: [File]) throws(ShareError) {
        try Self.checkName(name)
        guard !files.isEmpty, files.count <= Self.maximumFiles else {
            throw .badManifest("a share holds 1 to \(Self.maximumFiles) files, not \(files.count)")
        }
        if kind == .file, files.count != 1 || files[0].path != name {
            throw .badManifest("a file share holds exactly its file")
        }
        var seen = Set<String>()
        for file in files {
            try Self.checkPath(file.path)
            guard file.size >= 0, file.size <= Self.maximumFileSize else {
                throw .badManifest("\(file.path.debugDescription): size \(file.size) out of range")
            }
            guard (file.size == 0) == (file.root == nil), file.root.map({ $0.count == 32 }) ?? true else {
                throw .badManifest("\(file.path.debugDescription): a non-empty file has a 32-byte root, an empty one none")
            }
            if kind == .directory, !file.path.hasPrefix(name + "/") {
                throw .badManifest("\(file.path.debugDescription) is not inside \(name.debugDescription)")
            }
            guard seen.insert(file.path).inserted else { throw .badManifest("\(file.path.debugDescription) is named twice") }
        }
        // A path may not be both a file and a directory of another file.
        for file in files {
            var prefix = Substring(file.path)
            while let slash = prefix.lastIndex(of: "/") {
                prefix = prefix[..<slash]
                if seen.contains(String(prefix)) {
                    throw .badManifest("\(String(prefix).debugDescription) is both a file and a directory")
                }
            }
        }
        self.kind = kind
        self.name = name
        self.files = files.sorted { Array($0.path.utf8).lexicographicallyPrecedes(Array($1.path.utf8)) }
    }

    /// A share of one file.
    public init(file name: String, size: Int64, root: MerkleTree.Hash) throws(ShareError) {
        try self.init(kind: .file, name: name, files: [File(path: name, size: size, root: root)])
    }

    public var totalSize: Int64 { files.reduce(0) { $0 + $1.size } }

    /// The share's name on the wire and in links: the file's root, or the manifest's hash.
    public var id: ShareID {
        switch kind {
        case .file: ShareID(files[0].root ?? Array(SHA256.hash(data: encoded())))
        case .directory: ShareID(Array(SHA256.hash(data: encoded())))
        }
    }

    /// The canonical encoding: a header line, then a line per file, `size root path`
    /// (root as hex, `-` for an empty file), in canonical order.
    public func encoded() -> [UInt8] {
        var text = "sigma-manifest 1 \(kind.rawValue) \(name)\n"
        for file in files {
            text += "\(file.size) \(file.root.map(hex) ?? "-") \(file.path)\n"
        }
        return Array(text.utf8)
    }

    /// Parses and checks an encoded manifest from the network.
    public static func decode(_ bytes: [UInt8]) throws(ShareError) -> ShareManifest {
        guard bytes.count <= maximumEncodedSize else { throw .badManifest("manifest larger than \(maximumEncodedSize) bytes") }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw .badManifest("manifest is not UTF-8") }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.last == "" else { throw .badManifest("manifest does not end with a newline") }
        lines.removeLast()
        guard let header = lines.first else { throw .badManifest("empty manifest") }
        let headerFields = header.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
        guard headerFields.count == 4, headerFields[0] == "sigma-manifest", headerFields[1] == "1",
              let kind = Kind(rawValue: String(headerFields[2])) else {
            throw .badManifest("not a version 1 manifest")
        }
        var files: [File] = []
        for line in lines.dropFirst() {
            let fields = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, let size = Int64(fields[0]) else { throw .badManifest("malformed manifest line") }
            let root: MerkleTree.Hash? = fields[1] == "-" ? nil : unhex(fields[1])
            if fields[1] != "-", root?.count != 32 { throw .badManifest("malformed root in manifest") }
            files.append(File(path: String(fields[2]), size: size, root: root))
            if files.count > maximumFiles { throw .badManifest("more than \(maximumFiles) files") }
        }
        let manifest = try ShareManifest(kind: kind, name: String(headerFields[3]), files: files)
        guard manifest.encoded() == bytes else { throw .badManifest("manifest is not in canonical form") }
        return manifest
    }

    static func checkName(_ name: String) throws(ShareError) {
        guard isSafeComponent(name) else { throw .badManifest("\(name.debugDescription) is not a usable file name") }
    }

    /// A relative path of safe components: no `..`, `.`, empty or absolute parts, no
    /// control or format characters, no backslashes.
    static func checkPath(_ path: String) throws(ShareError) {
        let components = path.split(separator: "/", omittingEmptySubsequences: false)
        guard !path.hasPrefix("/"), components.allSatisfy({ isSafeComponent(String($0)) }) else {
            throw .badManifest("\(path.debugDescription) is not a safe relative path")
        }
    }

    static func isSafeComponent(_ component: String) -> Bool {
        guard !component.isEmpty, component != ".", component != "..",
              component.utf8.count <= maximumComponentLength else { return false }
        return component.unicodeScalars.allSatisfy { scalar in
            let category = scalar.properties.generalCategory
            return scalar != "/" && scalar != "\\" && category != .control && category != .format
                && category != .lineSeparator && category != .paragraphSeparator
        }
    }
}

/// A share's 32-byte name.
public struct ShareID: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) {
        precondition(bytes.count == 32, "a share id is 32 bytes")
        self.bytes = bytes
    }

    /// From 64 hex digits.
    public init?(hex text: some StringProtocol) {
        guard text.utf8.count == 64, let bytes = unhex(text) else { return nil }
        self.bytes = bytes
    }

    public var description: String { hex(bytes) }
}

func hex(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 15)])
    }
    return String(decoding: out, as: UTF8.self)
}

func unhex(_ text: some StringProtocol) -> [UInt8]? {
    let utf8 = Array(text.utf8)
    guard utf8.count % 2 == 0 else { return nil }
    func value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        default: nil
        }
    }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(utf8.count / 2)
    var index = 0
    while index < utf8.count {
        guard let high = value(utf8[index]), let low = value(utf8[index + 1]) else { return nil }
        bytes.append(high << 4 | low)
        index += 2
    }
    return bytes
}
