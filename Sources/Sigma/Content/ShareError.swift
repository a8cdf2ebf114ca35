/// What can go wrong with a share, worded for the person at the terminal.
public enum ShareError: Error, Sendable, Hashable, CustomStringConvertible {
    case badManifest(String)
    case badLink(String)
    case io(String)
    case verification(String)

    public var description: String {
        switch self {
        case .badManifest(let reason): "bad share manifest: \(reason)"
        case .badLink(let reason): "bad share link: \(reason)"
        case .io(let reason): reason
        case .verification(let reason): "verification failed: \(reason)"
        }
    }
}
