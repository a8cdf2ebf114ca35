import Crypto
import Foundation

/// Seals domain CA private keys before they go into the shared database, so that a copy
/// of the database (a backup, a replica, a leaked dump) does not hold them in clear.
///
/// AES-256-GCM with a key every presence node of the domain is given as a file; the
/// domain is authenticated with the key, so a sealed key cannot be moved to another
/// domain's row. Losing the file loses the CAs: keep a copy where the database's
/// backups are not.
public struct CAKeySealing: Sendable {
    let key: SymmetricKey

    public init(key: SymmetricKey) {
        self.key = key
    }

    /// Reads the key file (base64 of 32 bytes); creates it (mode 0600) with a new random
    /// key when `create` and it does not exist. `created` says whether it did.
    public static func load(from file: URL, create: Bool) throws(CAKeySealingError) -> (sealing: CAKeySealing, created: Bool) {
        if let text = try? String(contentsOf: file, encoding: .utf8) {
            guard let bytes = Data(base64Encoded: text.trimmingCharacters(in: .whitespacesAndNewlines)), bytes.count == 32 else {
                throw CAKeySealingError("\(file.path) is not a CA sealing key (base64 of 32 bytes)")
            }
            return (CAKeySealing(key: SymmetricKey(data: bytes)), false)
        }
        guard create else { throw CAKeySealingError("no CA sealing key at \(file.path)") }
        let key = SymmetricKey(size: .bits256)
        let text = key.withUnsafeBytes { Data($0).base64EncodedString() } + "\n"
        let directory = file.deletingLastPathComponent()
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let descriptor = open(file.path, O_CREAT | O_EXCL | O_WRONLY, 0o600)
        guard descriptor >= 0 else { throw CAKeySealingError("cannot create \(file.path): \(String(cString: strerror(errno)))") }
        let written = text.utf8CString.withUnsafeBufferPointer { write(descriptor, $0.baseAddress, $0.count - 1) }
        close(descriptor)
        guard written == text.utf8.count else { throw CAKeySealingError("cannot write \(file.path)") }
        return (CAKeySealing(key: key), true)
    }

    func seal(_ privateKey: Data, domain: String) throws -> Data {
        guard let combined = try AES.GCM.seal(privateKey, using: key, authenticating: Self.context(domain)).combined else {
            throw CAKeySealingError("sealing the CA key of \(domain) failed")
        }
        return combined
    }

    func unseal(_ sealed: Data, domain: String) throws(CAKeySealingError) -> Data {
        do {
            return try AES.GCM.open(AES.GCM.SealedBox(combined: sealed), using: key, authenticating: Self.context(domain))
        } catch {
            throw CAKeySealingError("the CA key of \(domain) in the database does not open with this sealing key (another node's key file?)")
        }
    }

    private static func context(_ domain: String) -> Data { Data("vertex domain CA key: \(domain)".utf8) }
}

public struct CAKeySealingError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
