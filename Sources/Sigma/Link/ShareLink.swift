import Foundation
import Q2Q

/// What a person passes on to let someone fetch a share: its id (the file's root or the
/// manifest's hash), kind, name, size, and who holds it.
///
///     sigma:5f2c…e1?kind=file&name=report.pdf&size=1048576&from=alice@example.com
///
/// The id is what is trusted: every byte fetched is checked against it. Name and size
/// only say what to expect, and a file share's are checked against the data too.
public struct ShareLink: Sendable, Hashable, CustomStringConvertible {
    public var id: ShareID
    public var kind: ShareManifest.Kind
    public var name: String
    public var size: Int64
    public var holders: [Q2QAddress]

    public init(id: ShareID, kind: ShareManifest.Kind, name: String, size: Int64, holders: [Q2QAddress]) {
        self.id = id
        self.kind = kind
        self.name = name
        self.size = size
        self.holders = holders
    }

    public init(_ manifest: ShareManifest, holders: [Q2QAddress]) {
        self.init(id: manifest.id, kind: manifest.kind, name: manifest.name, size: manifest.totalSize, holders: holders)
    }

    public init(_ text: String) throws(ShareError) {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.hasPrefix("sigma:"), let components = URLComponents(string: trimmed),
              components.scheme == "sigma" else {
            throw .badLink("a share link starts with sigma:")
        }
        guard let id = ShareID(hex: components.path) else { throw .badLink("the id is not 64 hex digits") }
        let items = components.queryItems ?? []
        func value(_ name: String) -> String? { items.first { $0.name == name }?.value }
        guard let kindText = value("kind"), let kind = ShareManifest.Kind(rawValue: kindText) else {
            throw .badLink("kind is file or dir")
        }
        guard let name = value("name") else { throw .badLink("no name") }
        try ShareManifest.checkName(name)
        guard let sizeText = value("size"), let size = Int64(sizeText), size >= 0, size <= ShareManifest.maximumFileSize else {
            throw .badLink("no usable size")
        }
        var holders: [Q2QAddress] = []
        for item in items where item.name == "from" {
            guard let text = item.value, let address = try? Q2QAddress(text) else {
                throw .badLink("'\(item.value ?? "")' is not a Q2Q address")
            }
            holders.append(address)
        }
        guard !holders.isEmpty else { throw .badLink("it names no holder (from=…)") }
        self.init(id: id, kind: kind, name: name, size: size, holders: holders)
    }

    public var description: String {
        var components = URLComponents()
        components.scheme = "sigma"
        components.path = id.description
        components.queryItems = [
            URLQueryItem(name: "kind", value: kind.rawValue),
            URLQueryItem(name: "name", value: name),
            URLQueryItem(name: "size", value: String(size)),
        ] + holders.map { URLQueryItem(name: "from", value: $0.description) }
        // `@` is legal in a query, but encoded it survives shells and chat programs alike.
        return components.string?.replacingOccurrences(of: "@", with: "%40") ?? "sigma:\(id)"
    }
}
