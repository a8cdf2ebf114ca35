/// Twisted's built-in `StartTLS` command. Its arguments (`tls_localCertificate`,
/// `tls_verifyAuthorities`) never go on the wire: here they are the `TLSConfiguration`
/// given to ``AMPConnection/startTLS(_:_:configuration:serverHostname:)`` and
/// returned by the responder registered with ``AMPResponders/registerStartTLS(_:_:)``.
public enum StartTLS: AMPCommand {
    public static let name = "StartTLS"
    public typealias Arguments = AMPEmpty
    public typealias Response = AMPEmpty
}
