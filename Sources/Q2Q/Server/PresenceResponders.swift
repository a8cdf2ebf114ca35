import AMP
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import PTCP

extension PresenceServer {
    /// The commands one connection may send. `session` is that connection's state.
    func responders(for session: PresenceSession) -> AMPResponders {
        var responders = AMPResponders()
        responders.registerImmediate(Identify.self) { [self] arguments, _ in
            try identify(arguments.subject)
        }
        responders.registerStartTLS(Secure.self) { [self] arguments, context in
            try await secure(arguments, session: session, context: context)
        }
        responders.register(Sign.self) { [self] arguments, context in
            try await sign(arguments, session: session, context: context)
        }
        responders.register(AddUser.self) { [self] arguments, context in
            try await addUser(arguments, session: session, context: context)
        }
        responders.register(Listen.self) { [self] arguments, context in
            try await listen(arguments, session: session, context: context)
        }
        responders.register(Inbound.self) { [self] arguments, context in
            try await inbound(arguments, session: session, context: context)
        }
        responders.register(DirectPathsQuery.self) { [self] arguments, _ in
            try directPaths(arguments, session: session)
        }
        responders.register(BindUDP.self) { [self] arguments, context in
            try await bindUDP(arguments, session: session, context: context)
        }
        responders.register(Virtual.self) { [self] arguments, context in
            try await openRelay(arguments, session: session, context: context)
        }
        responders.registerImmediate(Write.self) { [relay] arguments, context in
            relay.write(from: context.connection, id: arguments.id, body: arguments.body)
            return AMPEmpty()
        }
        responders.registerImmediate(Close.self) { [relay] arguments, context in
            relay.close(from: context.connection, id: arguments.id)
            return AMPEmpty()
        }
        responders.registerImmediate(Credit.self) { [relay] arguments, context in
            relay.credit(from: context.connection, id: arguments.id, bytes: arguments.bytes)
            return AMPEmpty()
        }
        responders.registerImmediate(Choke.self) { [relay] arguments, context in
            relay.choke(from: context.connection, id: arguments.id, choked: true)
            return AMPEmpty()
        }
        responders.registerImmediate(Unchoke.self) { [relay] arguments, context in
            relay.choke(from: context.connection, id: arguments.id, choked: false)
            return AMPEmpty()
        }
        responders.registerImmediate(ServerTime.self) { _, _ in
            ServerTime.Response(milliseconds: Int(Date().timeIntervalSince1970 * 1000))
        }
        responders.register(CheckReachable.self) { [self] arguments, context in
            try await checkReachable(arguments, session: session, context: context)
        }
        responders.registerWhoAmI()
        responders.registerImmediate(SourceIP.self) { _, context in
            guard let ip = context.remoteAddress?.ipAddress else {
                throw PresenceError.verifyError("the caller's address is unknown")
            }
            return SourceIP.Response(ip: ip)
        }
        return responders
    }

    /// A store call on behalf of a caller: when the store fails (its database is
    /// unreachable), the caller is told so in one line, and the operator sees it.
    func stored<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            logger.error("the store failed", metadata: ["while": "\(what)", "error": "\(error)"])
            problems.add("store failure while \(what): \(error)")
            throw PresenceError.unavailable("the presence server cannot reach its database; try again in a moment")
        }
    }

    func identify(_ subject: Q2QAddress) throws(PresenceError) -> Identify.Response {
        metrics.identify.increment()
        guard let authority = authority(for: subject.domain) else {
            throw .unknownDomain("this server is not the presence server of '\(subject.domain)'")
        }
        return Identify.Response(certificate: authority.certificate)
    }

    func secure(_ arguments: Secure.Arguments, session: PresenceSession, context: AMPRequestContext) async throws -> (AMPEmpty, AMPTLSUpgrade) {
        guard let authority = authority(for: arguments.to.domain) else {
            throw PresenceError.unknownDomain("this server is not the presence server of '\(arguments.to.domain)'")
        }
        var verification: AMPTLSVerification?
        var claimed: Q2QAddress?
        if arguments.authorize {
            guard let from = arguments.from, !from.isAnonymous else {
                throw PresenceError.verifyError("secure with authorize needs a From address")
            }
            // Our users are checked against our CA and revocation list; another
            // domain's users against its CA, pinned on first contact.
            let fromAuthority: Q2QCertificate
            do {
                fromAuthority = try await self.authority(forUsersOf: from.domain)
            } catch {
                throw PresenceError.verifyError("cannot verify \(from): no CA for \(from.domain) (\(error))")
            }
            let store = self.store
            let isOurs = self.authority(for: from.domain) != nil
            verification = Q2QPeerVerifier(expected: from, authority: fromAuthority, isRevoked: { serial in
                guard isOurs else { return false }
                return (try? await store.isRevoked(serial: serial)) ?? true
            }).tlsVerification
            claimed = from
        }
        let tls = try tlsContext(for: authority, verifyingPeer: arguments.authorize)
        guard session.secure(domain: authority.domain, claiming: claimed) else {
            throw PresenceError.verifyError("the connection is already secured")
        }
        logger.debug("secure", metadata: ["peer": "\(context.remoteAddress.map(String.init(describing:)) ?? "?")",
                                          "claims": "\(claimed?.description ?? "(anonymous)")"])
        var upgrade = AMPTLSUpgrade(context: tls, verification: verification)
        // The caller is `From` only once this connection's handshake has verified the
        // certificate it presented (a resumed session presents none, and is closed).
        upgrade.onPeerVerified = { [self, claimed, connection = context.connection] leaf in
            guard let certificate = try? Q2QCertificate(leaf), session.authenticate(certificate) else {
                logger.warning("a verified certificate that does not name the claimed address", metadata: ["claims": "\(claimed?.description ?? "?")"])
                return
            }
            markAuthenticated(connection)
        }
        return (AMPEmpty(), upgrade)
    }

    func sign(_ arguments: Sign.Arguments, session: PresenceSession, context: AMPRequestContext) async throws -> Sign.Response {
        guard context.connection.isTLS, let securedDomain = session.securedDomain, let authority = authority(for: securedDomain) else {
            throw PresenceError.secureRequired("sign needs a connection secured with 'secure' first: a password never travels in clear")
        }
        let address: Q2QAddress
        do {
            address = try authority.check(arguments.certificateRequest)
        } catch {
            throw PresenceError.badCertificateRequest(error.description)
        }
        let source = context.remoteAddress?.ipAddress ?? "?"
        // A try costs a token of the source address, of its network and of the account,
        // taken before the password is hashed (tries in flight at once all pay), and
        // given back when the password was right.
        let keys = ["ip " + source, "net " + RateLimiter.network(of: source), "user " + address.description]
        guard failedSigns.withLock({ $0.allowAll(keys, now: Date()) }) else {
            metrics.limited(.sign)
            metrics.signRefused.increment()
            throw PresenceError.rateLimited("too many failed sign attempts from \(source) or for \(address); try again later")
        }
        // Hashing is the expensive part: a few at a time, the rest told to come back.
        guard passwordChecks.wrappingAdd(1, ordering: .relaxed).newValue <= configuration.concurrentPasswordChecks else {
            passwordChecks.wrappingSubtract(1, ordering: .relaxed)
            // Turned away before any password was checked: not a failed attempt.
            failedSigns.withLock { $0.refundAll(keys, now: Date()) }
            metrics.limited(.passwordChecks)
            metrics.signRefused.increment()
            throw PresenceError.rateLimited("the server is busy checking passwords; try again in a moment")
        }
        let matches: Bool
        do {
            defer { passwordChecks.wrappingSubtract(1, ordering: .relaxed) }
            let hash: PasswordHash?
            do {
                hash = try await stored("checking the password of \(address)") { try await store.passwordHash(for: address) }
            } catch {
                // The database failed, not the caller: no attempt is charged.
                failedSigns.withLock { $0.refundAll(keys, now: Date()) }
                throw error
            }
            let password = arguments.password
            matches = try await NIOThreadPool.singleton.runIfActive {
                guard let hash else {
                    PasswordHash.burnEquivalentWork(password)
                    return false
                }
                return hash.matches(password)
            }
        }
        guard matches else {
            logger.notice("sign refused", metadata: ["address": "\(address)", "peer": "\(source)"])
            metrics.signRefused.increment()
            problems.add("sign refused for \(address) from \(source): no such user or a wrong password")
            throw PresenceError.noSuchUser("no user \(address), or a wrong password")
        }
        failedSigns.withLock { $0.refundAll(keys, now: Date()) }
        let now = Date()
        let certificate = try authority.issue(for: arguments.certificateRequest, validity: configuration.certificateValidity, now: now)
        try await stored("recording certificate \(certificate.serial)") { try await store.recordIssued(certificate, for: address, now: now) }
        logger.info("issued a certificate", metadata: ["address": "\(address)", "serial": "\(certificate.serial)"])
        metrics.signIssued.increment()
        return Sign.Response(certificate: certificate)
    }

    func addUser(_ arguments: AddUser.Arguments, session: PresenceSession, context: AMPRequestContext) async throws -> AMPEmpty {
        guard configuration.openRegistration else {
            throw PresenceError.notAllowed("open registration is off on this server; ask its operator for an account")
        }
        guard context.connection.isTLS, let domain = session.securedDomain else {
            throw PresenceError.secureRequired("add_user needs a connection secured with 'secure' first: a password never travels in clear")
        }
        let name = String(decoding: arguments.name, as: UTF8.self)
        let address: Q2QAddress
        do {
            address = try Q2QAddress(resource: name, domain: domain)
        } catch {
            throw PresenceError.notAllowed("'\(name)' cannot be a user name: \(error)")
        }
        if let problem = DomainAuthority.problem(naming: address) { throw PresenceError.notAllowed(problem) }
        guard !arguments.password.isEmpty else { throw PresenceError.notAllowed("the password is empty") }
        let source = context.remoteAddress?.ipAddress ?? "?"
        guard registrations.withLock({ $0.allow(source, now: Date()) }) else {
            metrics.limited(.registration)
            throw PresenceError.rateLimited("too many registrations from \(source); try again later")
        }
        let password = arguments.password
        let hash = try await NIOThreadPool.singleton.runIfActive { try PasswordHash(hashing: password) }
        guard try await store.addUser(address, password: hash, now: Date()) else {
            throw PresenceError.notAllowed("\(address) exists already")
        }
        logger.info("open registration", metadata: ["address": "\(address)", "peer": "\(source)"])
        return AMPEmpty()
    }

    func listen(_ arguments: Listen.Arguments, session: PresenceSession, context: AMPRequestContext) async throws -> AMPEmpty {
        guard let caller = session.authenticated, caller == arguments.from, let certificate = session.certificate else {
            throw PresenceError.verifyError("listen as \(arguments.from) needs a connection secured with that address's certificate")
        }
        // Only our own users are reached through us: `inbound` answers for our domains only.
        guard authority(for: caller.domain) != nil else {
            throw PresenceError.notAllowed("this server is not the presence server of '\(caller.domain)': listen at your own domain's")
        }
        let services = arguments.services
        guard !services.isEmpty, services.count <= configuration.maximumServicesPerListen,
              services.allSatisfy({ !$0.isEmpty && !$0.hasPrefix(".") && $0.utf8.count <= 255 }) else {
            throw PresenceError.verifyError("listen takes 1 to \(configuration.maximumServicesPerListen) service names of 1…255 bytes, not starting with '.'")
        }
        // Renewals re-check the certificate the connection was authenticated with: one
        // revoked or expired since then stops being listed.
        let now = Date()
        guard certificate.certificate.notValidAfter > now else {
            throw PresenceError.verifyError("the certificate of \(caller) has expired; register again")
        }
        guard try await !store.isRevoked(serial: certificate.serial) else {
            throw PresenceError.verifyError("the certificate of \(caller) was revoked")
        }
        let connection = context.connection
        // At most a few direct paths, and only `tcp@` ones: they are handed to callers as they are.
        let direct = (arguments.direct ?? []).prefix(Self.maximumDirectPaths).compactMap(\.tcpAddress).filter(\.hostIsIPAddress)
        let isNew: Bool
        do {
            isNew = try listeners.register(caller, services: services, connection: connection, certificate: certificate,
                                           description: arguments.description, direct: direct, now: now)
        } catch .tooManyServices(let limit) {
            throw PresenceError.notAllowed("a node may listen for at most \(limit) services on one connection")
        } catch .tooManyConnections(let limit) {
            throw PresenceError.notAllowed("\(caller) already listens on \(limit) connections")
        }
        if isNew {
            let registry = listeners
            Task { [logger] in
                await connection.waitUntilClosed()
                registry.remove(connection)
                logger.debug("listener left", metadata: ["address": "\(caller)"])
            }
        }
        logger.debug("listen", metadata: ["address": "\(caller)", "services": "\(services)"])
        return AMPEmpty()
    }

    static let maximumDirectPaths = 8

    /// `direct-paths`: what `to`'s listeners registered, at once (an empty list when
    /// none did, or nobody listens: `inbound` says that clearly).
    /// `Check-Reachable`: a TCP connection to the caller's own address at the port it
    /// names, given up after ``reachabilityTimeout``.
    func checkReachable(_ arguments: CheckReachable.Arguments, session: PresenceSession,
                        context: AMPRequestContext) async throws -> CheckReachable.Response {
        guard let caller = session.authenticated else {
            throw ConnectionError.verifyError("Check-Reachable needs a connection secured with an address's certificate")
        }
        guard (1...65535).contains(arguments.port), let ip = context.remoteAddress?.ipAddress,
              let target = try? SocketAddress(ipAddress: ip, port: arguments.port) else {
            throw ConnectionError.connectionError("Check-Reachable needs a port 1–65535")
        }
        let subnet = RateLimiter.network(of: ip)
        guard reachabilityChecks.withLock({ $0.allowAll(["address \(caller)", "source \(subnet)"], now: Date()) }) else {
            throw ConnectionError.connectionError("too many reachability checks; try again in a minute")
        }
        do {
            let channel = try await ClientBootstrap(group: group)
                .connectTimeout(TimeAmount(Self.reachabilityTimeout))
                .connect(to: target).get()
            try? await channel.close()
            return CheckReachable.Response(reachable: true, reason: nil)
        } catch ChannelError.connectTimeout(_) {
            return CheckReachable.Response(reachable: false, reason: "no answer within \(Self.reachabilityTimeout) (a NAT or firewall drops it)")
        } catch {
            return CheckReachable.Response(reachable: false, reason: "\(error)")
        }
    }

    static let reachabilityTimeout: Duration = .seconds(2)

    func directPaths(_ arguments: DirectPathsQuery.Arguments, session: PresenceSession) throws -> DirectPathsQuery.Response {
        guard let caller = session.authenticated, caller == arguments.from else {
            throw ConnectionError.verifyError("direct-paths from \(arguments.from) needs a connection secured with that address's certificate")
        }
        let registrations = listeners.listeners(of: arguments.to, service: arguments.service, now: Date())
        return DirectPathsQuery.Response(methods: registrations.flatMap { $0.direct.map(Q2QMethod.tcp) },
                                         listening: !registrations.isEmpty)
    }

    /// `address` when it is the caller's: its connection's source, or proven by `proof`.
    private func callersOwn(_ address: HostPort?, proof: [UInt8]?, connectedFrom source: SocketAddress?, now: Date) -> HostPort? {
        guard let address else { return nil }
        if address.host == source?.ipAddress { return address }
        if let proof, addressProofs.verifies(proof, for: address, now: now) { return address }
        return nil
    }

    func inbound(_ arguments: Inbound.Arguments, session: PresenceSession, context: AMPRequestContext) async throws -> Inbound.Response {
        guard let caller = session.authenticated, caller == arguments.from else {
            throw ConnectionError.verifyError("inbound from \(arguments.from) needs a connection secured with that address's certificate")
        }
        guard authority(for: arguments.to.domain) != nil else {
            throw ConnectionError.notFound("this server is not the presence server of '\(arguments.to.domain)'")
        }
        let now = Date()
        guard inbounds.withLock({ $0.allow(caller.description, now: now) }), relay.mayOffer(to: caller, now: now) else {
            metrics.limited(.inbound)
            metrics.inboundRefused.increment()
            throw ConnectionError.notFound("too many connection attempts from \(caller); try again in a moment")
        }
        let started = ContinuousClock.now
        defer { metrics.inboundLatency.recordNanoseconds((ContinuousClock.now - started).nanoseconds) }
        // Listeners send to `udp_source` and `udp_source6`: each must be the caller's own
        // address (the one its TCP connection comes from, or one our address discovery
        // answered at, as its proof shows), or a caller could aim them at somebody else.
        var forwarded = arguments
        forwarded.udpSource = callersOwn(arguments.udpSource, proof: arguments.udpProof, connectedFrom: context.remoteAddress, now: now)
        forwarded.udpSource6 = callersOwn(arguments.udpSource6, proof: arguments.udpProof6, connectedFrom: context.remoteAddress, now: now)
        (forwarded.udpProof, forwarded.udpProof6) = (nil, nil)
        // The CA we verified the caller with (pinned when it secured this connection):
        // the listener learns it from us, not from whoever connects to it.
        forwarded.callerAuthority = try? await authority(forUsersOf: caller.domain)
        let registrations = listeners.listeners(of: arguments.to, service: arguments.service, now: Date())
        var refusal: ConnectionError?
        let answers = await ask(registrations, Inbound.self, forwarded) { refusal = refusal ?? ($0 as? ConnectionError) }
        let offers = answers.flatMap { registration, answer in
            answer.listeners.map { offer in
                var offer = offer
                // The listener's certificate as this server verified it. `virtual`
                // from a node would mean a channel to this server; ours instead
                // relays to that node, so it is offered last, after direct methods.
                offer.certificate = registration.certificate
                offer.methods.removeAll { $0 == .virtual }
                offer.methods.append(.virtual)
                relay.remember(offer: offer.identifier, from: registration.connection, to: caller, now: Date())
                return offer
            }
        }
        guard !offers.isEmpty else {
            // A listener that refused this caller says why; otherwise nobody listens.
            (refusal == nil ? metrics.inboundNotFound : metrics.inboundRefused).increment()
            throw refusal ?? ConnectionError.notFound("\(arguments.to) is not listening for '\(arguments.service)'")
        }
        metrics.inboundAnswered.increment()
        return Inbound.Response(listeners: offers)
    }

    /// `bind-udp` from a connecting node: passed to the nodes listening as `q2qsrc` for
    /// that service; it succeeds when one of them takes it (the one whose UDP port is
    /// `udpsrc`; the others refuse).
    func bindUDP(_ arguments: BindUDP.Arguments, session: PresenceSession, context: AMPRequestContext) async throws -> AMPEmpty {
        guard let caller = session.authenticated, caller == arguments.q2qdst else {
            throw ConnectionError.connectionError("bind-udp for \(arguments.q2qdst) needs a connection secured with that address's certificate")
        }
        // The listener will send SYNs to `udpdst`: only to the caller's own address (the
        // one its connection comes from), or it could aim them at somebody else.
        guard arguments.udpdst.host == context.remoteAddress?.ipAddress else {
            throw ConnectionError.connectionError("bind-udp may only ask for a connection back to your own address")
        }
        let registrations = listeners.listeners(of: arguments.q2qsrc, service: arguments.service, now: Date())
        let taken = await !ask(registrations, BindUDP.self, arguments).isEmpty
        guard taken else {
            throw ConnectionError.connectionError("no listener of \(arguments.q2qsrc) for '\(arguments.service)' has UDP port \(arguments.udpsrc)")
        }
        return AMPEmpty()
    }

    /// Sends `command` to every listening node in `registrations` at once; the answers
    /// of those that answered in time (the others are left out, their errors given to
    /// `refused`).
    func ask<Command: AMPCommand>(_ registrations: [ListenerRegistry.Registration], _ command: Command.Type,
                                  _ arguments: Command.Arguments,
                                  refused: (any Error) -> Void = { _ in }) async -> [(ListenerRegistry.Registration, Command.Response)] {
        let timeout = configuration.inboundTimeout
        return await withTaskGroup(of: (ListenerRegistry.Registration, Result<Command.Response, any Error>).self) { group in
            for registration in registrations {
                group.addTask {
                    do {
                        return (registration, .success(try await withTimeout(timeout, "\(Command.name) to a listener") {
                            try await registration.connection.call(Command.self, arguments)
                        }))
                    } catch {
                        return (registration, .failure(error))
                    }
                }
            }
            var answers: [(ListenerRegistry.Registration, Command.Response)] = []
            for await (registration, result) in group {
                switch result {
                case .success(let answer): answers.append((registration, answer))
                case .failure(let error): refused(error)
                }
            }
            return answers
        }
    }

    /// `virtual` with a listener id: open a channel on the connection of the node that
    /// offered that id, and splice the two.
    func openRelay(_ arguments: Virtual.Arguments, session: PresenceSession, context: AMPRequestContext) async throws -> Virtual.Response {
        guard let callerAddress = session.authenticated else {
            throw ConnectionError.notFound("relayed channels need a connection secured with your certificate")
        }
        guard let listenerID = arguments.listenerID else {
            throw ConnectionError.notFound("this server hosts no services of its own: virtual needs a listener id")
        }
        guard let callerWindow = arguments.window, ChannelWindow.isValid(callerWindow) else {
            throw ConnectionError.notFound("a relayed channel needs a window of 1 to \(ChannelWindow.maximumCredit) bytes")
        }
        let caller = context.connection
        // The caller made its TCP connection, so its ids are positive.
        guard arguments.id > 0, !relay.isInUse(caller, arguments.id) else {
            throw ConnectionError.notFound("virtual channel id \(arguments.id) is not a free id of yours")
        }
        // Windows larger than the relay will hold are passed on smaller: the sender
        // then simply has less credit than the receiver would have allowed.
        let towardsCaller = min(callerWindow, RelayTable.maximumWindow)
        // An offer opens one relayed channel, for the caller it was made to.
        guard let target = relay.takeOffer(listenerID, for: callerAddress, now: Date()) else {
            throw ConnectionError.notFound("no listener '\(listenerID.prefix(64))' offered to you to relay to (unknown, used or expired)")
        }
        let targetID = relayNumbers.withLock { numbers in
            let next = (numbers[ObjectIdentifier(target)] ?? 0) - 1
            numbers[ObjectIdentifier(target)] = next
            return next
        }
        if let refusal = relay.splice(caller, arguments.id, window: towardsCaller, with: target, targetID, caller: callerAddress) {
            logger.notice("relayed channel refused", metadata: ["caller": "\(callerAddress)", "reason": "\(refusal)"])
            problems.add("relayed channel from \(callerAddress) refused: \(refusal)")
            throw ConnectionError.notFound(refusal)
        }
        let towardsTarget: Int
        do {
            let answer = try await withTimeout(configuration.inboundTimeout, "relaying a channel") {
                try await target.call(Virtual.self, .init(id: targetID, listener: listenerID, window: towardsCaller))
            }
            guard let window = answer.window, ChannelWindow.isValid(window) else {
                throw ConnectionError.notFound("it answered without a flow-control window")
            }
            towardsTarget = min(window, RelayTable.maximumWindow)
        } catch {
            relay.close(from: caller, id: arguments.id)
            throw ConnectionError.notFound("the listener did not take the relayed channel: \(error)")
        }
        relay.accepted(caller, arguments.id, window: towardsTarget)
        return Virtual.Response(window: towardsTarget)
    }
}
