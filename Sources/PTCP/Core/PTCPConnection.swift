/// One PTCP connection as a sans-I/O state machine: fed datagrams (``receive(_:now:)``),
/// application writes and reads, and the time (``handleTimeout(now:)``); it answers with
/// datagrams to send (``poll(now:)``), the next moment it must be woken
/// (``nextDeadline``) and events (``nextEvent()``). No sockets, no clocks.
///
/// Reliability is QUIC-like over a TCP-like byte stream: packet numbers are never
/// reused, stream bytes are addressed by 62-bit offsets, acknowledgements list
/// received packet-number ranges (selective), loss is declared by packet threshold (3)
/// or time threshold (9/8 RTT) — fast retransmit without waiting for a timer — and by
/// the RFC 6298 retransmission timeout as the last resort.
public struct PTCPConnection: Sendable {
    public enum Role: Sendable { case client, server }

    public enum Event: Equatable, Sendable {
        /// The handshake completed.
        case connected
        /// Bytes are ready for ``read(maximum:)``.
        case readable
        /// The peer's stream ended and everything it sent has been read.
        case peerFinished
        /// The connection is over: nil when both streams ended cleanly (or ``abort()``).
        case closed(PTCPConnectionError?)
    }

    public struct Statistics: Sendable, Equatable {
        public var packetsSent = 0
        public var packetsReceived = 0
        public var bytesSent = 0
        public var bytesReceived = 0
        public var lostPackets = 0
        /// Packets declared lost and acknowledged after all: the path reordered them.
        public var spuriousLosses = 0
        public var retransmittedBytes = 0
        public var retransmissionTimeouts = 0
        public var duplicatePackets = 0
        /// Datagrams that did not decode, and packets that broke the protocol (data
        /// beyond our window, acknowledgements of packets never sent): dropped.
        public var droppedPackets = 0
        public var forgedAcknowledgements = 0
        /// Padded PINGs sent to find whether the path carries larger datagrams.
        public var pathMTUProbes = 0
        /// Times the congestion controller cut its window to re-measure the path's delay
        /// (BBR's ProbeRTT).
        public var pathDelayProbes = 0
        public init() {}
    }

    enum State: Equatable, Sendable {
        case connecting
        case accepting
        case established
        case closed
    }

    private struct SentPacket: Sendable {
        var number: UInt64
        var sentAt: PTCPInstant
        var size: Int
        var stream: Range<UInt64>?
        var fin: Bool
        var handshake: Bool
        var delivered: Int
        var deliveredAt: PTCPInstant
        var firstSentAt: PTCPInstant
        var appLimited: Bool
        var acknowledged = false
    }

    public let role: Role
    public let localID: UInt64
    public private(set) var peerID: UInt64
    public let configuration: PTCPConfiguration
    public private(set) var statistics = Statistics()
    private(set) var state: State

    private var rtt: RTTEstimator
    private var congestion: any CongestionController
    private var events: [Event] = []

    // Sending.
    private var nextPacketNumber: UInt64 = 0
    private var sendStream = SendStream()
    /// The next stream byte never sent.
    private var sentOffset: UInt64 = 0
    private var ackedStream = PTCPRangeSet()
    private var ackedPrefix: UInt64 = 0
    private var retransmissions = PTCPRangeSet()
    private var finOffset: UInt64?
    private var finPending = false
    private var finAcknowledged = false
    /// Ack-eliciting packets sent and not yet acknowledged or declared lost, by number.
    private var sent: [SentPacket] = []
    private var sentHead = 0
    private var bytesInFlight = 0
    private var largestAcknowledged: UInt64?
    private var lastAckElicitingSentAt: PTCPInstant?
    private var lastSentAt: PTCPInstant
    private var timeouts = 0
    private var lossTime: PTCPInstant?
    private var reordering = ReorderingTolerance()
    private var pacer: Pacer
    private var peerMaxData: UInt64
    private var handshakeNeeded: Bool
    private var pingNeeded = false
    private var resetNeeded = false
    private var delivered = 0
    private var deliveredAt: PTCPInstant
    private var firstSentAt: PTCPInstant
    private var appLimitedUntil = 0

    // Receiving.
    private var receiveStream = ReceiveStream()
    private var receivedPackets = PTCPRangeSet()
    private var forgottenBelow: UInt64 = 0
    private var largestReceivedAt: PTCPInstant?
    private var unacknowledgedEliciting = 0
    private var ackPending = false
    private var ackNow = false
    private var ackDeadline: PTCPInstant?
    private var advertisedMaxData: UInt64
    private var lastReceivedAt: PTCPInstant
    private let startedAt: PTCPInstant
    private var peerFinishedReported = false
    /// Both streams ended and the application was told; we still answer the peer's
    /// retransmissions until our FIN is acknowledged and the peer has been quiet for
    /// the linger time.
    private var lingering = false

    // Path MTU probing (a small DPLPMTUD, RFC 8899).
    /// The largest datagram sent now: `maximumDatagramSize` until a probe of
    /// `probedDatagramSize` is acknowledged, and again after a retransmission timeout
    /// (a path that stopped carrying large datagrams: a black hole).
    public private(set) var datagramSize: Int
    private struct MTUProbe {
        var outstanding: UInt64?
        var attempts = 0
        var notBefore: PTCPInstant?
        var settled = false
    }
    private var mtuProbe = MTUProbe()
    static let mtuProbeAttempts = 3
    static let mtuProbeRetry: Duration = .seconds(1)

    /// Starts a connection to a listening peer; the first ``poll(now:)`` gives the SYN.
    public init(connectingWith localID: UInt64, configuration: PTCPConfiguration = .init(), now: PTCPInstant) {
        self.init(role: .client, localID: localID, peerID: 0, peerMaxData: 0, configuration: configuration, now: now)
        state = .connecting
    }

    /// Accepts the SYN in `datagram`; the first ``poll(now:)`` gives the SYN-ACK.
    public init(accepting datagram: some Collection<UInt8>, localID: UInt64, configuration: PTCPConfiguration = .init(),
                now: PTCPInstant) throws(PTCPConnectionError) {
        let packet: PTCPPacket
        do { packet = try PTCPPacket(decoding: datagram) } catch { throw .protocolViolation(error.description) }
        try self.init(accepting: packet, localID: localID, configuration: configuration, now: now)
    }

    /// Accepts a SYN already decoded (as the endpoint decodes it to find its source id).
    /// Early data in the SYN is readable at once.
    public init(accepting packet: PTCPPacket, localID: UInt64, configuration: PTCPConfiguration = .init(),
                now: PTCPInstant) throws(PTCPConnectionError) {
        guard let handshake = packet.handshake, !packet.flags.contains(.ack), packet.destinationID == 0, handshake.sourceID != 0,
              !packet.flags.contains(.fin) else {
            throw .protocolViolation("not a connection request")
        }
        self.init(role: .server, localID: localID, peerID: handshake.sourceID, peerMaxData: handshake.initialMaxData,
                  configuration: configuration, now: now)
        state = .accepting
        statistics.packetsReceived = 1
        statistics.bytesReceived = packet.encodedSize
        recordReceived(packet, now: now)
        // Early data beyond our window is left for the client to send again once it knows it.
        if let data = packet.data, data.offset + UInt64(data.bytes.count) <= advertisedMaxData,
           receiveStream.insert(offset: data.offset, bytes: data.bytes), receiveStream.readableBytes > 0 {
            events.append(.readable)
        }
    }

    private init(role: Role, localID: UInt64, peerID: UInt64, peerMaxData: UInt64, configuration: PTCPConfiguration, now: PTCPInstant) {
        precondition(localID != 0, "connection id 0 means 'new connection' on the wire")
        self.role = role
        self.localID = localID
        self.peerID = peerID
        self.peerMaxData = peerMaxData
        var configuration = configuration
        // Stream offsets travel as their low 32 bits: what is in flight must stay well
        // within 2 GiB of the receiver's next byte.
        configuration.receiveWindow = min(max(configuration.receiveWindow, 1), PTCPConfiguration.maximumReceiveWindow)
        self.configuration = configuration
        self.congestion = makeCongestionController(configuration.congestionControl, segmentSize: configuration.maximumDatagramSize)
        self.rtt = RTTEstimator(initialRTO: configuration.initialRetransmissionTimeout)
        self.state = .connecting
        self.handshakeNeeded = true
        self.lastSentAt = now
        self.lastReceivedAt = now
        self.startedAt = now
        self.pacer = Pacer(now: now)
        self.deliveredAt = now
        self.firstSentAt = now
        self.advertisedMaxData = UInt64(configuration.receiveWindow)
        self.datagramSize = configuration.maximumDatagramSize
        if (configuration.probedDatagramSize ?? 0) <= configuration.maximumDatagramSize { mtuProbe.settled = true }
    }

    // MARK: - Application side

    public var isEstablished: Bool { state == .established }
    public var isClosed: Bool { state == .closed }
    /// Written bytes not yet sent for the first time (what a writer should be held to).
    public var unsentBytes: Int { Int(sendStream.endOffset - sentOffset) }
    /// Written bytes not yet acknowledged.
    public var bufferedBytes: Int { sendStream.heldBytes }
    public var readableBytes: Int { receiveStream.readableBytes }
    /// Bytes that arrived ahead of a gap, waiting for it.
    public var outOfOrderBytes: Int { receiveStream.heldOutOfOrderBytes }
    public var smoothedRTT: Duration? { rtt.smoothed }
    public var congestionWindow: Int { congestion.congestionWindow }

    public mutating func nextEvent() -> Event? {
        events.isEmpty ? nil : events.removeFirst()
    }

    /// Queues bytes to send. Ignored once the stream was finished or the connection is over.
    public mutating func write(_ bytes: [UInt8]) {
        guard finOffset == nil, !isOver else { return }
        sendStream.append(bytes)
    }

    /// Ends our stream after what was written (a half-close: the peer may go on sending).
    public mutating func finish() {
        guard finOffset == nil, !isOver else { return }
        finOffset = sendStream.endOffset
        finPending = true
    }

    /// Drops the connection at once, telling the peer (RST).
    public mutating func abort() {
        guard !isOver else { return }
        if peerID != 0 { resetNeeded = true }
        close(nil, linger: false)
    }

    /// Up to `maximum` bytes the peer sent, in order. Reading opens the window again.
    public mutating func read(maximum: Int) -> [UInt8]? {
        guard let bytes = receiveStream.read(maximum: maximum) else { return nil }
        afterRead()
        return bytes
    }

    /// Like ``read(maximum:)``, but one received chunk at a time, not joined: for a
    /// reader that copies into its own buffer (saves a copy per packet).
    public mutating func readChunk(maximum: Int) -> ArraySlice<UInt8>? {
        guard let bytes = receiveStream.readChunk(maximum: maximum) else { return nil }
        afterRead()
        return bytes
    }

    private mutating func afterRead() {
        let limit = receiveStream.readOffset + UInt64(configuration.receiveWindow)
        // Tell the peer once a quarter of the window has been freed, not on every read.
        if limit - advertisedMaxData >= UInt64(configuration.receiveWindow / 4) {
            ackPending = true
            ackNow = true
        }
        reportPeerFinished()
        // Reading the peer's last byte may be what completes the close.
        checkClosed()
    }

    private var isOver: Bool { state == .closed || lingering }

    // MARK: - Incoming datagrams

    /// Takes one datagram addressed to this connection. Anything malformed or
    /// impossible is dropped and counted.
    public mutating func receive(_ datagram: some Collection<UInt8>, now: PTCPInstant) {
        guard state != .closed else { return }
        let packet: PTCPPacket
        do {
            packet = try PTCPPacket(decoding: datagram, expectedPacketNumber: receivedPackets.last?.upperBound ?? 0,
                                    expectedOffset: receiveStream.contiguousOffset)
        } catch {
            statistics.droppedPackets += 1
            return
        }
        // The client's SYNs name no destination yet (a copy of the first, or one carrying
        // more early data); the endpoint routes them here by the client's id.
        let isClientSYN = role == .server && packet.destinationID == 0 && packet.handshake?.sourceID == peerID
            && !packet.flags.contains(.ack)
        guard packet.destinationID == localID || isClientSYN else {
            statistics.droppedPackets += 1
            return
        }
        if packet.flags.contains(.rst) {
            guard !isOver else { return }
            close(.reset, linger: false)
            return
        }
        if let acknowledgement = packet.acknowledgement, acknowledgement.largest >= nextPacketNumber {
            // Acknowledges a packet we never sent: forged or corrupt; trust nothing in it.
            statistics.forgedAcknowledgements += 1
            statistics.droppedPackets += 1
            return
        }
        if packet.flags.contains(.fin) && packet.data == nil {
            statistics.droppedPackets += 1
            return
        }
        if let data = packet.data, data.offset + UInt64(data.bytes.count) > advertisedMaxData {
            statistics.droppedPackets += 1   // beyond the window we gave
            return
        }
        if packet.packetNumber < forgottenBelow || receivedPackets.contains(packet.packetNumber) {
            statistics.duplicatePackets += 1
            if packet.isAckEliciting {
                ackPending = true
                ackNow = true   // our acknowledgement was probably lost
            }
            return
        }
        statistics.packetsReceived += 1
        statistics.bytesReceived += datagram.count
        lastReceivedAt = now

        switch state {
        case .connecting:
            guard let handshake = packet.handshake, packet.flags.contains(.ack), handshake.sourceID != 0 else {
                statistics.droppedPackets += 1
                return
            }
            peerID = handshake.sourceID
            peerMaxData = handshake.initialMaxData
            handshakeNeeded = false
            state = .established
            events.append(.connected)
        case .accepting:
            if packet.handshake != nil {
                // The client's SYN again: our SYN-ACK was lost or is late.
                handshakeNeeded = true
            } else {
                handshakeNeeded = false
                state = .established
                events.append(.connected)
            }
        default:
            if packet.handshake != nil, role == .server {
                handshakeNeeded = !isOver   // a late SYN: answer it again
            }
        }

        // A packet after a gap in the peer's numbers may have overtaken the missing ones.
        let arrivedAhead = receivedPackets.last.map { packet.packetNumber > $0.upperBound } ?? false
        recordReceived(packet, now: now)
        if let acknowledgement = packet.acknowledgement {
            process(acknowledgement, arrivedAhead: arrivedAhead, now: now)
        }
        if let data = packet.data, !isOver {
            if receiveStream.insert(offset: data.offset, bytes: data.bytes), receiveStream.readableBytes > 0 {
                if !events.contains(.readable) { events.append(.readable) }
            }
            if packet.flags.contains(.fin), !receiveStream.finish(at: data.offset + UInt64(data.bytes.count)) {
                close(.protocolViolation("the peer moved the end of its stream"), linger: false)
                resetNeeded = true
                return
            }
            reportPeerFinished()
        }
        checkClosed()
    }

    private mutating func recordReceived(_ packet: PTCPPacket, now: PTCPInstant) {
        let number = packet.packetNumber
        let outOfOrder = (receivedPackets.last.map { number != $0.upperBound } ?? (number != 0))
        receivedPackets.insert(number)
        if receivedPackets.count > PTCPPacket.maximumAckRanges {
            receivedPackets.keepHighest(PTCPPacket.maximumAckRanges)
            forgottenBelow = receivedPackets.first!.lowerBound
        }
        if number + 1 == receivedPackets.last?.upperBound { largestReceivedAt = now }
        guard packet.isAckEliciting else { return }
        ackPending = true
        unacknowledgedEliciting += 1
        // Acknowledge at once what suggests loss (a gap), ends a stream or opens one;
        // otherwise every few packets or after the delay.
        if outOfOrder || packet.flags.contains(.fin) || packet.handshake != nil || packet.flags.contains(.ping)
            || unacknowledgedEliciting >= configuration.ackEveryPackets || state != .established {
            ackNow = true
        } else if ackDeadline == nil {
            ackDeadline = now + configuration.maximumAckDelay
        }
    }

    private mutating func reportPeerFinished() {
        guard !peerFinishedReported, receiveStream.isFinished else { return }
        peerFinishedReported = true
        events.append(.peerFinished)
    }

    // MARK: - Acknowledgements and loss

    private func sentIndex(atOrAfter number: UInt64) -> Int {
        var low = sentHead, high = sent.count
        while low < high {
            let mid = (low + high) / 2
            if sent[mid].number < number { low = mid + 1 } else { high = mid }
        }
        return low
    }

    private mutating func process(_ acknowledgement: PTCPPacket.Acknowledgement, arrivedAhead: Bool, now: PTCPInstant) {
        peerMaxData = max(peerMaxData, acknowledgement.maxData)
        var newest: SentPacket?
        var acknowledgedBytes = 0
        for range in acknowledgement.ranges {
            var index = sentIndex(atOrAfter: range.lowerBound)
            while index < sent.count, sent[index].number <= range.upperBound {
                if !sent[index].acknowledged {
                    sent[index].acknowledged = true
                    let packet = sent[index]
                    bytesInFlight -= packet.size
                    acknowledgedBytes += packet.size
                    delivered += packet.size
                    deliveredAt = now
                    if let stream = packet.stream { acknowledgeStream(stream) }
                    if packet.fin { finAcknowledged = true }
                    if packet.number == mtuProbe.outstanding, let probed = configuration.probedDatagramSize {
                        // The path carries the larger size: use it from now on.
                        mtuProbe.outstanding = nil
                        mtuProbe.settled = true
                        datagramSize = probed
                    }
                    if newest == nil || packet.number > newest!.number { newest = packet }
                }
                index += 1
            }
            // Packets declared lost that arrived after all: their bytes are delivered
            // (their retransmissions are skipped if not yet sent), and the path reorders.
            for late in reordering.spuriouslyLost(in: range, now: now, rtt: rtt) {
                statistics.spuriousLosses += 1
                acknowledgedBytes += late.size
                delivered += late.size
                deliveredAt = now
                if let stream = late.stream { acknowledgeStream(stream) }
                if late.fin { finAcknowledged = true }
            }
        }
        compactSent()
        guard let newest else {
            checkClosed()   // a late acknowledgement may have been our FIN's
            return
        }
        timeouts = 0
        largestAcknowledged = max(largestAcknowledged ?? 0, newest.number)
        var sample: DeliveryRateSample?
        var rttSample: Duration?
        if newest.number == acknowledgement.largest {
            let delay = Duration.microseconds(Int64(acknowledgement.delayMicroseconds))
            let measured = now - newest.sentAt
            rttSample = measured
            // Into the minimum only once loss detection says whether it overtook others.
            rtt.add(sample: measured, ackDelay: min(delay, configuration.maximumAckDelay * 2), updatingMinimum: false)
        }
        // Delivery rate over the newest packet's flight (BBR's rate sample).
        firstSentAt = newest.sentAt
        let interval = max(newest.sentAt - newest.firstSentAt, now - newest.deliveredAt)
        if interval > .zero {
            sample = DeliveryRateSample(bytesPerSecond: Double(delivered - newest.delivered) / interval.seconds,
                                        rtt: now - newest.sentAt, isAppLimited: newest.appLimited,
                                        priorDelivered: newest.delivered)
        }
        detectLoss(now: now)
        // Older packets still outstanding once loss detection is done were overtaken
        // by this one (or lost beyond what it can tell yet).
        let overtook = arrivedAhead || (sentHead < sent.count && sent[sentHead].number < newest.number)
        sample?.overtook = overtook
        if let rttSample, !overtook { rtt.offerMinimum(rttSample) }
        congestion.onAcknowledged(bytes: acknowledgedBytes, sample: sample, delivered: delivered,
                                  bytesInFlight: bytesInFlight, rtt: rtt, now: now)
        statistics.pathDelayProbes = congestion.pathDelayProbes
        checkClosed()
    }

    private mutating func acknowledgeStream(_ range: Range<UInt64>) {
        guard range.upperBound > ackedPrefix else { return }
        ackedStream.insert(range)
        if let first = ackedStream.first, first.lowerBound <= ackedPrefix {
            ackedPrefix = first.upperBound
            ackedStream.removeAll(below: ackedPrefix)
            sendStream.discard(below: ackedPrefix)
        }
    }

    private mutating func compactSent() {
        while sentHead < sent.count, sent[sentHead].acknowledged { sentHead += 1 }
        if sentHead > 1024, sentHead * 2 > sent.count {
            sent.removeFirst(sentHead)
            sentHead = 0
        }
    }

    /// Declares lost what 3 later packets overtook, or what is 9/8 RTT older than the
    /// newest acknowledged packet (RFC 9002 §6.1) — on a path that reorders, only what
    /// is older by the RTT and a learned reordering window (``ReorderingTolerance``);
    /// arms the timer for the rest.
    private mutating func detectLoss(now: PTCPInstant) {
        guard let largestAcknowledged else { return }
        lossTime = nil
        let lossDelay = reordering.lossDelay(rtt)
        var lostBytes = 0
        var newestLost: PTCPInstant?
        var index = sentHead
        while index < sent.count, sent[index].number < largestAcknowledged {
            defer { index += 1 }
            guard !sent[index].acknowledged else { continue }
            let packet = sent[index]
            if reordering.isLostByCount(distance: largestAcknowledged - packet.number) || packet.sentAt <= now - lossDelay {
                let isProbe = packet.number == mtuProbe.outstanding
                markLost(at: index, now: now)
                // A lost probe says the path's MTU is smaller, not that it is congested.
                guard !isProbe else { continue }
                lostBytes += packet.size
                newestLost = max(newestLost ?? packet.sentAt, packet.sentAt)
            } else {
                let when = packet.sentAt + lossDelay
                lossTime = min(lossTime ?? when, when)
            }
        }
        compactSent()
        if let newestLost {
            congestion.onLost(bytes: lostBytes, sentAt: newestLost, bytesInFlight: bytesInFlight, now: now)
        }
    }

    private mutating func markLost(at index: Int, now: PTCPInstant) {
        sent[index].acknowledged = true   // no longer outstanding
        let packet = sent[index]
        bytesInFlight -= packet.size
        statistics.lostPackets += 1
        if packet.number != mtuProbe.outstanding {
            reordering.declaredLost(.init(number: packet.number, declaredAt: now, size: packet.size, stream: packet.stream,
                                          fin: packet.fin), rtt: rtt)
        } else {
            mtuProbe.outstanding = nil
            mtuProbe.notBefore = now + Self.mtuProbeRetry
            if mtuProbe.attempts >= Self.mtuProbeAttempts { mtuProbe.settled = true }
        }
        if let stream = packet.stream {
            for gap in ackedStream.gaps(in: max(stream.lowerBound, ackedPrefix)..<max(stream.upperBound, ackedPrefix)) {
                retransmissions.insert(gap)
            }
        }
        if packet.fin, !finAcknowledged { finPending = true }
        if packet.handshake, state == .connecting || state == .accepting { handshakeNeeded = true }
    }

    // MARK: - Timers

    /// When ``handleTimeout(now:)`` must next be called, if ever.
    public var nextDeadline: PTCPInstant? {
        guard state != .closed else { return nil }
        let idle = state == .established ? lastReceivedAt + configuration.idleTimeout : startedAt + configuration.handshakeTimeout
        let keepalive = state == .established && !lingering ? lastSentAt + configuration.keepaliveInterval : nil
        let lingerEnd = finAcknowledged && lingering ? lastReceivedAt + configuration.linger : nil
        // Only a packet the window allows waits for pacing; otherwise an acknowledgement
        // wakes us. So does the client's next packet while the anti-amplification limit
        // holds an acceptor back: a pacing deadline then would fire at once, again and
        // again, until the handshake timed out (seen when a caller abandoned its SYN).
        let pacing = wantsToSend && windowAllowsSending && !amplificationLimited ? pacer.deadline : nil
        return earliest(idle, keepalive, lingerEnd, pacing, ackDeadline, lossTime, retransmissionDeadline)
    }

    private func earliest(_ instants: PTCPInstant?...) -> PTCPInstant? {
        instants.compactMap { $0 }.min()
    }

    private var retransmissionTimeout: Duration {
        rtt.retransmissionTimeout * (1 << min(timeouts, 6))
    }

    private var retransmissionDeadline: PTCPInstant? {
        if bytesInFlight > 0, let lastAckElicitingSentAt {
            return lastAckElicitingSentAt + retransmissionTimeout
        }
        // Held back by the peer's window with nothing in flight: probe it, in case the
        // acknowledgement that opened it was lost.
        if state == .established, hasNewData, sentOffset >= peerMaxData {
            return lastSentAt + retransmissionTimeout
        }
        return nil
    }

    /// Runs whatever timers have expired at `now`.
    public mutating func handleTimeout(now: PTCPInstant) {
        switch state {
        case .closed:
            return
        case .connecting, .accepting:
            if now >= startedAt + configuration.handshakeTimeout {
                close(.handshakeTimedOut, linger: false)
                return
            }
        case .established:
            if lingering {
                // Closed for the application: done once our FIN is acknowledged and the
                // linger is over, or once the peer has gone quiet (it closed first).
                if (finAcknowledged && now >= lastReceivedAt + configuration.linger)
                    || now >= lastReceivedAt + configuration.idleTimeout {
                    state = .closed
                    return
                }
            } else if now >= lastReceivedAt + configuration.idleTimeout {
                close(.timedOut, linger: false)
                return
            } else if now >= lastSentAt + configuration.keepaliveInterval {
                pingNeeded = true
            }
        }
        if let ackDeadline, now >= ackDeadline { ackNow = true }
        if let lossTime, now >= lossTime { detectLoss(now: now) }
        if let deadline = retransmissionDeadline, now >= deadline {
            onRetransmissionTimeout(now: now)
        }
    }

    private mutating func onRetransmissionTimeout(now: PTCPInstant) {
        let outstanding = (sentHead..<sent.count).filter { !sent[$0].acknowledged }
        if let probe = mtuProbe.outstanding, outstanding.count == 1, sent[outstanding[0]].number == probe {
            // Only the probe went unanswered: the path's MTU is smaller, nothing else.
            markLost(at: outstanding[0], now: now)
            compactSent()
            return
        }
        statistics.retransmissionTimeouts += 1
        timeouts += 1
        if datagramSize > configuration.maximumDatagramSize {
            // Large datagrams may have stopped getting through (a route change to a
            // smaller MTU with its ICMP filtered): back to the size the handshake proved.
            datagramSize = configuration.maximumDatagramSize
            mtuProbe.settled = true
        }
        if bytesInFlight > 0 {
            for index in outstanding {
                markLost(at: index, now: now)
            }
            compactSent()
            congestion.onRetransmissionTimeout()
        }
        if !hasSomethingToRetransmit { pingNeeded = true }
    }

    private var hasSomethingToRetransmit: Bool {
        !retransmissions.isEmpty || handshakeNeeded || finPending
    }

    private var windowAllowsSending: Bool {
        let room = congestion.congestionWindow - bytesInFlight
        return room >= datagramSize || (bytesInFlight == 0 && room > 0)
    }

    private var hasNewData: Bool { sentOffset < sendStream.endOffset }

    /// An acceptor whose client has not yet proven its address may send at most three
    /// times what it received (as QUIC limits a server): a forged SYN cannot turn this
    /// endpoint into an amplifier.
    private var amplificationLimited: Bool {
        state == .accepting && statistics.bytesSent + configuration.maximumDatagramSize > 3 * statistics.bytesReceived
    }

    private var wantsToSend: Bool {
        guard state == .established || state == .accepting else { return false }
        return !retransmissions.isEmpty || (hasNewData && sentOffset < peerMaxData) || (finPending && sentOffset == finOffset)
    }

    // MARK: - Outgoing datagrams

    /// The next datagram to send now, or nil when there is nothing (or the window,
    /// pacing or the peer's flow control says wait: see ``nextDeadline``).
    public mutating func poll(now: PTCPInstant) -> [UInt8]? {
        switch state {
        case .closed:
            return resetNeeded ? resetDatagram() : nil
        case .connecting:
            if handshakeNeeded { return handshakeDatagram(now: now) }
            if sentOffset < min(sendStream.endOffset, Self.earlyDataLimit(configuration)) {
                // A first flight larger than a datagram (a TLS ClientHello with a
                // post-quantum key share is about 1.4 KB) goes on in further SYNs.
                return earlySYN(from: sentOffset, now: now)
            }
            return ackNow ? acknowledgementDatagram(now: now) : nil
        case .accepting:
            if handshakeNeeded { return handshakeDatagram(now: now) }
            // Answers to early data may go before the client's address is proven, within
            // the anti-amplification limit.
            if wantsToSend, !amplificationLimited, let datagram = dataDatagram(now: now) {
                return datagram
            }
            return ackNow ? acknowledgementDatagram(now: now) : nil
        case .established:
            break
        }
        if resetNeeded { return resetDatagram() }
        if handshakeNeeded, role == .server { return handshakeDatagram(now: now) }
        if wantsToSend, let probe = mtuProbeDatagram(now: now) { return probe }
        if wantsToSend, let datagram = dataDatagram(now: now) { return datagram }
        if pingNeeded {
            pingNeeded = false
            return finishPacket(PTCPPacket(flags: .ping, destinationID: peerID, packetNumber: 0), now: now)
        }
        if ackNow { return acknowledgementDatagram(now: now) }
        if !wantsToSend, bytesInFlight < congestion.congestionWindow {
            // Nothing to send with room in the window: rate samples from now on
            // measure the application, not the path.
            appLimitedUntil = max(delivered + bytesInFlight, 1)
        }
        return nil
    }

    /// A PING padded to `probedDatagramSize`, while one is worth trying: sent while
    /// there is data to send (an idle connection has no use for a larger size), within
    /// the congestion window, one at a time, a second after a lost one, three at most.
    private mutating func mtuProbeDatagram(now: PTCPInstant) -> [UInt8]? {
        guard !mtuProbe.settled, mtuProbe.outstanding == nil, !lingering, let size = configuration.probedDatagramSize,
              now >= mtuProbe.notBefore ?? now, congestion.congestionWindow - bytesInFlight >= size else { return nil }
        let packet = PTCPPacket(flags: .ping, destinationID: peerID, packetNumber: 0)
        mtuProbe.outstanding = nextPacketNumber
        mtuProbe.attempts += 1
        statistics.pathMTUProbes += 1
        // No acknowledgement rides on it: its size must be exactly the one probed.
        return finishPacket(packet, now: now, ackRanges: 0, padTo: size)
    }

    private mutating func acknowledgementDatagram(now: PTCPInstant) -> [UInt8] {
        finishPacket(PTCPPacket(destinationID: peerID, packetNumber: 0), now: now)
    }

    private mutating func resetDatagram() -> [UInt8] {
        resetNeeded = false
        let packet = PTCPPacket(flags: .rst, destinationID: peerID, packetNumber: nextPacketNumber)
        nextPacketNumber += 1
        statistics.packetsSent += 1
        return packet.encoded()
    }

    private mutating func handshakeDatagram(now: PTCPInstant) -> [UInt8] {
        handshakeNeeded = false
        // The SYN carries what was written before it, up to a datagram (early data: the
        // first flight of TLS travels with it, saving a round trip). Every copy of the
        // SYN carries the same bytes from offset 0; more follow in further SYNs.
        guard role == .server else { return earlySYN(from: 0, now: now) }
        // The SYN-ACK always acknowledges the SYN: that is how the client knows it.
        ackPending = true
        let handshake = PTCPPacket.Handshake(sourceID: localID, initialMaxData: advertisedMaxData)
        return finishPacket(PTCPPacket(destinationID: peerID, packetNumber: 0, handshake: handshake), now: now)
    }

    /// At most this much early data: three datagrams' worth, which the acceptor may
    /// answer with three times as much before the client's address is proven.
    public static func earlyDataLimit(_ configuration: PTCPConfiguration) -> UInt64 {
        3 * earlyDataRoom(configuration)
    }

    private static func earlyDataRoom(_ configuration: PTCPConfiguration) -> UInt64 {
        // What a SYN's parts take at most: a packet number below 2^14 (two bytes),
        // the handshake 16, the data's offset 4 and length 2.
        UInt64(configuration.maximumDatagramSize - PTCPPacket.fixedHeaderSize - 2 - 16 - 4 - 2)
    }

    /// A client SYN with the early data from `offset` (the acceptor takes every SYN of
    /// ours like the first, up to ``earlyDataLimit(_:)``), padded to a full datagram.
    private mutating func earlySYN(from offset: UInt64, now: PTCPInstant) -> [UInt8] {
        let handshake = PTCPPacket.Handshake(sourceID: localID, initialMaxData: advertisedMaxData)
        let end = min(sendStream.endOffset, offset + Self.earlyDataRoom(configuration), Self.earlyDataLimit(configuration))
        let early = offset..<max(offset, end)
        sentOffset = max(sentOffset, early.upperBound)
        let data = early.isEmpty ? nil : PTCPPacket.StreamData(offset: offset, bytes: sendStream.bytes(in: early))
        let packet = PTCPPacket(destinationID: 0, packetNumber: 0, handshake: handshake, data: data)
        return finishPacket(packet, now: now, stream: data == nil ? nil : early, padTo: configuration.maximumDatagramSize)
    }

    private mutating func dataDatagram(now: PTCPInstant) -> [UInt8]? {
        guard pacer.allows(now: now), windowAllowsSending else { return nil }
        // A pending acknowledgement rides along (a few ranges of it); the rest of the
        // datagram is stream bytes.
        let acknowledgement = pendingAcknowledgement(now: now, ranges: 4)
        let header = PTCPPacket(destinationID: peerID, packetNumber: nextPacketNumber, packetNumberSize: nextPacketNumberSize,
                                acknowledgement: acknowledgement, data: .init(offset: 0, bytes: []))
        let capacity = datagramSize - header.overhead
        var range: Range<UInt64>?
        var isRetransmission = false
        while range == nil, let candidate = retransmissions.first {
            let unacknowledged = ackedStream.gaps(in: max(candidate.lowerBound, ackedPrefix)..<max(candidate.upperBound, ackedPrefix))
            guard let first = unacknowledged.first else {
                retransmissions.remove(candidate)
                continue
            }
            let taken = first.lowerBound..<min(first.upperBound, first.lowerBound + UInt64(capacity))
            retransmissions.remove(candidate.lowerBound..<taken.upperBound)
            range = taken
            isRetransmission = true
        }
        if range == nil, hasNewData, sentOffset < peerMaxData {
            let end = min(sendStream.endOffset, peerMaxData, sentOffset + UInt64(capacity))
            range = sentOffset..<end
            sentOffset = end
        }
        var flags: PTCPPacket.Flags = []
        let dataRange: Range<UInt64>
        if let range {
            dataRange = range
        } else if finPending, let finOffset, sentOffset == finOffset {
            dataRange = finOffset..<finOffset
        } else {
            return nil
        }
        if let finOffset, finPending, dataRange.upperBound == finOffset, sentOffset == finOffset {
            flags.insert(.fin)
            finPending = false
        }
        if isRetransmission { statistics.retransmittedBytes += dataRange.count }
        let data = PTCPPacket.StreamData(offset: dataRange.lowerBound, bytes: sendStream.bytes(in: dataRange))
        let packet = PTCPPacket(flags: flags, destinationID: peerID, packetNumber: 0, acknowledgement: acknowledgement, data: data)
        let datagram = finishPacket(packet, now: now, stream: dataRange.isEmpty ? nil : dataRange)
        if let rate = congestion.pacingRate {
            pacer.sent(bytes: datagram.count, rate: rate, datagramSize: datagramSize, now: now)
        }
        if flags.contains(.fin) { checkClosed() }
        return datagram
    }

    /// How many bytes the next packet number takes on the wire.
    private var nextPacketNumberSize: Int {
        PTCPPacket.packetNumberSize(for: nextPacketNumber, largestAcknowledged: largestAcknowledged)
    }

    /// The acknowledgement due, with at most `ranges` ranges (the highest), or nil.
    private mutating func pendingAcknowledgement(now: PTCPInstant, ranges: Int) -> PTCPPacket.Acknowledgement? {
        guard ackPending, !receivedPackets.isEmpty, ranges > 0 else { return nil }
        advertisedMaxData = max(advertisedMaxData, receiveStream.readOffset + UInt64(configuration.receiveWindow))
        let acknowledged = receivedPackets.ranges.reversed().prefix(ranges).map { $0.lowerBound...($0.upperBound - 1) }
        let delay = largestReceivedAt.map { now - $0 } ?? .zero
        let micros = UInt32(clamping: max(0, delay.nanoseconds / 1000))
        return .init(maxData: advertisedMaxData, delayMicroseconds: micros, ranges: Array(acknowledged))
    }

    /// Numbers the packet, adds a pending acknowledgement (unless it has one, or it is a
    /// client's SYN), pads it to `padTo` bytes, encodes, and records it.
    private mutating func finishPacket(_ packet: PTCPPacket, now: PTCPInstant, stream: Range<UInt64>? = nil,
                                       ackRanges: Int = PTCPPacket.maximumAckRanges, padTo: Int? = nil) -> [UInt8] {
        var packet = packet
        packet.packetNumber = nextPacketNumber
        packet.packetNumberSize = nextPacketNumberSize
        nextPacketNumber += 1
        if packet.acknowledgement == nil, state != .connecting || packet.handshake == nil,
           let acknowledgement = pendingAcknowledgement(now: now, ranges: ackRanges) {
            packet.acknowledgement = acknowledgement
            packet.flags.insert(.ack)
        }
        if let padTo { packet.padding = max(0, padTo - packet.encodedSize) }
        if packet.acknowledgement != nil {
            ackPending = false
            ackNow = false
            ackDeadline = nil
            unacknowledgedEliciting = 0
        }
        let datagram = packet.encoded()
        statistics.packetsSent += 1
        statistics.bytesSent += datagram.count
        lastSentAt = now
        if packet.isAckEliciting {
            if bytesInFlight == 0 {
                // Sending resumes after a pause: the rate clock restarts here.
                firstSentAt = now
                deliveredAt = now
            }
            sent.append(SentPacket(number: packet.packetNumber, sentAt: now, size: datagram.count, stream: stream,
                                   fin: packet.flags.contains(.fin), handshake: packet.handshake != nil,
                                   delivered: delivered, deliveredAt: deliveredAt, firstSentAt: firstSentAt,
                                   appLimited: delivered < appLimitedUntil))
            bytesInFlight += datagram.count
            lastAckElicitingSentAt = now
        }
        return datagram
    }

    // MARK: - Closing

    /// Both streams are complete once all our data is acknowledged, our FIN is sent and
    /// the peer's stream was read to its end. The FIN's own acknowledgement is not
    /// awaited (as TCP's close does not wait in LAST-ACK); it is retransmitted while we linger.
    private mutating func checkClosed() {
        guard state == .established, !lingering, let finOffset, ackedPrefix == finOffset,
              !finPending || finAcknowledged, peerFinishedReported else { return }
        close(nil, linger: true)
    }

    private mutating func close(_ error: PTCPConnectionError?, linger: Bool) {
        if linger {
            lingering = true
        } else {
            state = .closed
        }
        events.append(.closed(error))
        retransmissions = PTCPRangeSet()
        pingNeeded = false
        handshakeNeeded = false
    }
}

public enum PTCPConnectionError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The peer reset the connection.
    case reset
    /// Nothing heard from the peer for the idle timeout.
    case timedOut
    /// The handshake got no answer.
    case handshakeTimedOut
    case protocolViolation(String)

    public var description: String {
        switch self {
        case .reset: "the peer reset the PTCP connection"
        case .timedOut: "the PTCP peer stopped answering"
        case .handshakeTimedOut: "no answer to the PTCP handshake"
        case .protocolViolation(let what): "PTCP protocol violation: \(what)"
        }
    }
}
